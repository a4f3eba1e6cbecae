#include "clipper/data/shard_writer.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/core/progress.hpp"
#include "clipper/data/image.hpp"
#include "clipper/data/shard_list.hpp"
#include "rng.hpp"
#include "shard_builder.hpp"

namespace fs = std::filesystem;

namespace clipper::data {

namespace {
std::string padded(std::int64_t v, int digits) {
  std::string s = std::to_string(v);
  if (static_cast<int>(s.size()) < digits)
    s.insert(0, static_cast<std::size_t>(digits) - s.size(), '0');
  return s;
}
}  // namespace

ShardWriter::ShardWriter(ShardWriterOptions options) : o_(std::move(options)) {
  core::require(!o_.out_dir.empty(), "shards: the output folder is empty");
  core::require(o_.samples_per_shard >= 1, "shards: samples per shard must be at least 1");
  core::require(o_.prefix.find('/') == std::string::npos,
                "shards: the prefix '" + o_.prefix + "' contains '/'");
  std::error_code ec;
  fs::create_directories(o_.out_dir, ec);
  core::require(!ec, "shards: cannot create the folder '" + o_.out_dir + "': " + ec.message());
}

ShardWriter::~ShardWriter() {
  if (ar_) {
    archive_write_free(ar_);
    ar_ = nullptr;
    std::error_code ec;
    fs::remove(current_tmp_, ec);
  }
}

std::string ShardWriter::shard_name(std::int64_t index) const {
  if (o_.clip_benchmark_names) return std::to_string(index) + ".tar";
  return o_.prefix + "-" + padded(index, o_.digits) + ".tar";
}

void ShardWriter::resume_after(const std::vector<std::pair<std::string, std::int64_t>>& kept) {
  core::require(!ar_ && sizes_.empty(), "shards: resume_after() must come before any write()");
  for (const auto& [name, n] : kept) {
    sizes_.emplace_back(name, n);
    report_.shards.push_back((fs::path(o_.out_dir) / name).string());
    report_.samples += n;
  }
}

std::string ShardWriter::end_shard() {
  if (!ar_) return {};
  close_current();
  return sizes_.back().first;
}

void ShardWriter::open_next() {
  const std::string name = shard_name(static_cast<std::int64_t>(sizes_.size()));
  current_ = (fs::path(o_.out_dir) / name).string();
  current_tmp_ = current_ + ".tmp";
  ar_ = archive_write_new();
  archive_write_set_format_pax_restricted(ar_);
  archive_write_set_bytes_in_last_block(ar_, 1);
  if (archive_write_open_filename(ar_, current_tmp_.c_str()) != ARCHIVE_OK) {
    const std::string err = archive_error_string(ar_) ? archive_error_string(ar_) : "?";
    archive_write_free(ar_);
    ar_ = nullptr;
    throw core::InputError("shards: cannot write '" + current_tmp_ + "': " + err);
  }
  in_current_ = 0;
  sizes_.emplace_back(name, 0);
}

void ShardWriter::close_current() {
  if (!ar_) return;
  const bool ok = archive_write_close(ar_) == ARCHIVE_OK;
  const std::string err = ok ? "" : (archive_error_string(ar_) ? archive_error_string(ar_) : "?");
  archive_write_free(ar_);
  ar_ = nullptr;
  core::require(ok, "shards: cannot finish '" + current_ + "': " + err);
  core::fsync_path(current_tmp_);  // a shard that has its name is complete, even after a crash
  core::rename_durable(current_tmp_, current_);
  sizes_.back().second = in_current_;
  report_.shards.push_back(current_);
}

void ShardWriter::write(const std::string& key,
                        const std::vector<std::pair<std::string, std::string>>& files) {
  core::require(!finished_, "shards: write after finish");
  const auto slash = key.rfind('/');
  core::require(!key.empty() &&
                    key.find('.', slash == std::string::npos ? 0 : slash + 1) == std::string::npos,
                "shards: the sample key '" + key + "' is empty or has a dot in its base name");
  if (ar_ && in_current_ >= o_.samples_per_shard) close_current();
  if (!ar_) open_next();
  for (const auto& [ext, bytes] : files) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, (key + "." + ext).c_str());
    archive_entry_set_size(e, static_cast<la_int64_t>(bytes.size()));
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_mtime(e, 0, 0);
    const bool ok = archive_write_header(ar_, e) == ARCHIVE_OK &&
                    archive_write_data(ar_, bytes.data(), bytes.size()) ==
                        static_cast<la_ssize_t>(bytes.size());
    archive_entry_free(e);
    core::require(ok, "shards: cannot write '" + key + "." + ext + "' to '" + current_tmp_ +
                          "': " + (archive_error_string(ar_) ? archive_error_string(ar_) : "?"));
  }
  ++in_current_;
  ++report_.samples;
}

// An entry of this prefix past the shards this run wrote (left by an earlier, larger run).
bool ShardWriter::is_stale(const std::string& name) const {
  if (o_.clip_benchmark_names) {
    const std::string n = name.size() > 4 ? name.substr(0, name.size() - 4) : "";
    return !n.empty() && name.compare(name.size() - 4, 4, ".tar") == 0 && n.size() < 10 &&
           n.find_first_not_of("0123456789") == std::string::npos &&
           std::stoll(n) >= static_cast<long long>(sizes_.size());
  }
  const std::string head = o_.prefix + "-";
  if (name.rfind(head, 0) != 0 || name.size() != head.size() + o_.digits + 4 ||
      name.compare(name.size() - 4, 4, ".tar") != 0)
    return false;
  const std::string digits = name.substr(head.size(), static_cast<std::size_t>(o_.digits));
  if (digits.find_first_not_of("0123456789") != std::string::npos) return false;
  return std::stoll(digits) >= static_cast<long long>(sizes_.size());
}

ShardsReport ShardWriter::finish() {
  if (finished_) return report_;
  close_current();
  finished_ = true;
  // Merge into sizes.json (other prefixes in the same folder keep their entries).
  nlohmann::json j = nlohmann::json::object();
  if (auto old = read_sizes_json(o_.out_dir))
    for (const auto& [k, v] : *old)
      if (!is_stale(k)) j[k] = v;
  for (const auto& [k, v] : sizes_) j[k] = v;
  core::write_file_atomic((fs::path(o_.out_dir) / "sizes.json").string(), j.dump(2) + "\n");
  if (!sizes_.empty() && o_.clip_benchmark_names) {
    const std::string last = std::to_string(sizes_.size() - 1);
    report_.pattern =
        (fs::path(o_.out_dir) / (sizes_.size() == 1 ? last : "{0.." + last + "}")).string() +
        ".tar";
  } else if (!sizes_.empty()) {
    const std::string last = padded(static_cast<std::int64_t>(sizes_.size()) - 1, o_.digits);
    report_.pattern = (fs::path(o_.out_dir) / (o_.prefix + "-")).string() +
                      (sizes_.size() == 1 ? last : "{" + padded(0, o_.digits) + ".." + last + "}") +
                      ".tar";
  }
  return report_;
}

bool resizes(const ShardWriterOptions& o, int width, int height) {
  return o.resize > 0 && !(o.no_upscale && std::min(width, height) <= o.resize);
}

std::string prepare_image(const std::string& bytes, const ShardWriterOptions& o,
                          const std::string& what) {
  TransformSpec ts;
  ts.transparency = o.transparency;
  ImageProcessor proc(ts, o.max_image_pixels);
  std::string out, why;
  int w = 0, h = 0;
  const auto f = detail::prepare_image_bytes(bytes, o, proc, &out, &w, &h, &why);
  core::require(f == detail::InputFailure::none,
                "shards: cannot decode the image '" + what + "': " + why);
  return out;
}

std::string ShardsReport::summary() const {
  std::string s = "wrote " + core::group_digits(samples) + " samples in " +
                  std::to_string(shards.size()) + " shard(s): " + pattern;
  if (skipped) {
    s += "; " + core::group_digits(skipped) + " input(s) skipped (";
    bool first = true;
    for (const auto& [k, v] : failed) {
      s += (first ? "" : ", ") + k + " " + core::group_digits(v);
      first = false;
    }
    s += ")";
  }
  if (kept_shards) s += "; " + std::to_string(kept_shards) + " shard(s) kept from an earlier run";
  char tail[96];
  std::snprintf(tail, sizeof tail, "; %.1f s, %.0f inputs/s on %d thread(s)", seconds,
                seconds > 0 ? static_cast<double>(inputs) / seconds : 0.0, threads);
  return s + tail;
}

namespace {

bool read_file_to(const fs::path& p, std::string* out) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

std::string trim_caption(std::string s) {
  while (!s.empty() &&
         (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t'))
    s.pop_back();
  std::size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  return s.substr(i);
}

std::int64_t utf8_chars(const std::string& s) {
  std::int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

bool is_image_ext(std::string ext) {
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".webp";
}

std::vector<std::string> parse_row(const std::string& line, char sep) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (sep != '\t' && c == '"') {
      if (quoted && i + 1 < line.size() && line[i + 1] == '"') {
        cur += '"';
        ++i;
      } else {
        quoted = !quoted;
      }
    } else if (c == sep && !quoted) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty() && cur.back() == '\r') cur.pop_back();
  out.push_back(cur);
  return out;
}

// One image file and its caption into a sample with its source in the .json member.
detail::Prepared prepare_pair(const std::string& image_path, const std::string& caption,
                              const nlohmann::json& source, const std::string& where,
                              const ShardWriterOptions& o, ImageProcessor& proc) {
  detail::Prepared r;
  std::string bytes, img, why;
  if (!read_file_to(image_path, &bytes) || bytes.empty()) {
    r.failure = detail::InputFailure::unreadable;
    r.message = "'" + image_path + "'" + where + ": cannot read the file" +
                (bytes.empty() && fs::exists(image_path) ? " (it is empty)" : "");
    return r;
  }
  r.failure = detail::prepare_image_bytes(bytes, o, proc, &img, &r.width, &r.height, &why);
  if (r.failure != detail::InputFailure::none) {
    r.message = "'" + image_path + "'" + where + ": " + why;
    return r;
  }
  r.caption_chars = utf8_chars(caption);
  r.files = {{"jpg", std::move(img)}, {"txt", caption}, {"json", source.dump()}};
  return r;
}

std::string options_id(const std::string& kind, const std::string& input) {
  return kind + "\n" + input;
}

}  // namespace

ShardsReport shards_from_folder(const std::string& folder, const ShardWriterOptions& o) {
  core::require(fs::is_directory(folder), "shards: '" + folder + "' is not a folder");
  auto images = std::make_shared<std::vector<fs::path>>();
  for (const auto& e : fs::recursive_directory_iterator(folder))
    if (e.is_regular_file() && is_image_ext(e.path().extension().string()))
      images->push_back(e.path());
  std::sort(images->begin(), images->end());
  core::require(!images->empty(), "shards: no image with a caption found in '" + folder + "'");
  detail::InputSet in;
  in.size = static_cast<std::int64_t>(images->size());
  in.what = "the folder '" + folder + "' (no image with a caption)";
  in.options_id = options_id("folder", folder);
  in.identity = [images](std::int64_t i) {
    return (*images)[static_cast<std::size_t>(i)].string();
  };
  in.prepare = [images, &o](std::int64_t i, ImageProcessor& proc) {
    const fs::path& p = (*images)[static_cast<std::size_t>(i)];
    auto caption_path = p;
    caption_path.replace_extension(".txt");
    std::string caption;
    if (!read_file_to(caption_path, &caption)) {
      detail::Prepared r;
      r.failure = detail::InputFailure::missing_caption;
      r.message = "'" + p.string() + "': no caption file '" + caption_path.string() + "'";
      return r;
    }
    return prepare_pair(p.string(), trim_caption(caption), {{"source", p.string()}}, "", o, proc);
  };
  return detail::build_shards(in, o);
}

namespace {

struct CsvRow {
  std::int64_t row = 0;  // 1-based line number in the table (the header is row 1)
  std::string image, caption;
  std::size_t columns = 0;  // of a row too short to hold both columns; 0 for a good row
};

struct Separator {
  char c = '\t';
  std::string how;  // "given with --csv-separator", "sniffed from the header", ...
  std::string name() const {
    return c == '\t' ? "tab" : c == ',' ? "','" : "'" + std::string(1, c) + "'";
  }
};

Separator pick_separator(const std::string& header, char given) {
  if (given) return {given, "given with --csv-separator"};
  if (header.find('\t') != std::string::npos) return {'\t', "sniffed from the header"};
  if (header.find(',') != std::string::npos) return {',', "sniffed from the header"};
  return {'\t', "OpenCLIP's default"};
}

int find_column(const std::vector<std::string>& header, const std::string& name,
                const std::string& table, const Separator& sep, const char* option) {
  for (std::size_t i = 0; i < header.size(); ++i)
    if (trim_caption(header[i]) == name) return static_cast<int>(i);
  std::string cols;
  for (auto h : header) {
    h = trim_caption(h);
    for (std::size_t p; (p = h.find('\t')) != std::string::npos;) h.replace(p, 1, "\\t");
    cols += (cols.empty() ? "'" : ", '") + h + "'";
  }
  throw core::InputError(
      "shards: the table '" + table + "' has no column '" + name + "' (separator: " + sep.name() +
      ", " + sep.how + "; its columns: " + cols + "). Name the column with " + option +
      ", or set the separator with --csv-separator ',' or --csv-separator '\\t'");
}

std::vector<CsvRow> read_csv(const std::string& table, const CsvOptions& csv, Separator* sep_out) {
  std::ifstream in(table);
  core::require(static_cast<bool>(in), "shards: cannot read the table '" + table + "'");
  std::string line;
  core::require(static_cast<bool>(std::getline(in, line)),
                "shards: the table '" + table + "' is empty");
  const Separator sep = pick_separator(line, csv.separator);
  *sep_out = sep;
  const auto header = parse_row(line, sep.c);
  const int ic = find_column(header, csv.image_column, table, sep, "--csv-img-key");
  const int cc = find_column(header, csv.caption_column, table, sep, "--csv-caption-key");
  const fs::path base = csv.paths_from_cwd ? fs::path() : fs::path(table).parent_path();
  std::vector<CsvRow> rows;
  for (std::int64_t row = 2; std::getline(in, line); ++row) {
    if (trim_caption(line).empty()) continue;
    const auto cols = parse_row(line, sep.c);
    CsvRow r;
    r.row = row;
    if (static_cast<int>(cols.size()) <= std::max(ic, cc)) {
      r.columns = cols.size();
    } else {
      fs::path p = cols[static_cast<std::size_t>(ic)];
      r.image = (p.is_relative() ? base / p : p).string();
      r.caption = cols[static_cast<std::size_t>(cc)];
    }
    rows.push_back(std::move(r));
  }
  return rows;
}

}  // namespace

ShardsReport shards_from_csv(const std::string& table, const CsvOptions& csv,
                             const ShardWriterOptions& o) {
  Separator sep;
  auto rows = std::make_shared<std::vector<CsvRow>>(read_csv(table, csv, &sep));
  core::require(!rows->empty(), "shards: no readable row in '" + table + "'");
  detail::InputSet in;
  in.size = static_cast<std::int64_t>(rows->size());
  in.what = "'" + table + "' (no readable row)";
  in.options_id = options_id("csv", table + "\n" + csv.image_column + "\n" + csv.caption_column +
                                        "\n" + sep.c + (csv.paths_from_cwd ? "cwd" : "table"));
  in.identity = [rows](std::int64_t i) {
    const auto& r = (*rows)[static_cast<std::size_t>(i)];
    return std::to_string(r.row) + "\n" + r.image + "\n" + r.caption;
  };
  in.prepare = [rows, table, &o](std::int64_t i, ImageProcessor& proc) {
    const auto& r = (*rows)[static_cast<std::size_t>(i)];
    const std::string where = " (" + table + " row " + std::to_string(r.row) + ")";
    if (r.columns > 0) {
      detail::Prepared bad;
      bad.failure = detail::InputFailure::bad_row;
      bad.message = table + " row " + std::to_string(r.row) + ": it has " +
                    std::to_string(r.columns) + " column(s)";
      return bad;
    }
    const nlohmann::json source = {{"source", table + " row " + std::to_string(r.row)},
                                   {"table", table},
                                   {"row", r.row},
                                   {"image", r.image}};
    return prepare_pair(r.image, r.caption, source, where, o, proc);
  };
  return detail::build_shards(in, o);
}

ShardsReport shards_from_csv(const std::string& table, const std::string& image_column,
                             const std::string& caption_column, char separator,
                             const ShardWriterOptions& o) {
  CsvOptions csv;
  csv.image_column = image_column;
  csv.caption_column = caption_column;
  csv.separator = separator;
  return shards_from_csv(table, csv, o);
}

namespace {

// A file read as a stream through libarchive: gunzipped when it is gzip, as it is otherwise.
class ByteStream {
 public:
  // The handle is freed by a_'s deleter also when the constructor throws (found by fuzz_idx).
  explicit ByteStream(const std::string& path)
      : path_(path), a_(archive_read_new(), archive_read_free) {
    archive_read_support_filter_gzip(a_.get());
    archive_read_support_format_raw(a_.get());
    archive_entry* e = nullptr;
    core::require(archive_read_open_filename(a_.get(), path.c_str(), 1 << 16) == ARCHIVE_OK,
                  "cannot read '" + path + "': " + error());
    const int r = archive_read_next_header(a_.get(), &e);
    core::require(r == ARCHIVE_OK || r == ARCHIVE_EOF, "cannot read '" + path + "': " + error());
    at_end_ = r == ARCHIVE_EOF;  // an empty file
  }
  bool gzipped() const { return archive_filter_code(a_.get(), 0) == ARCHIVE_FILTER_GZIP; }
  // Appends up to n bytes to `out`; fewer only at the end of the data.
  void read(std::uint64_t n, std::string* out) {
    char buf[1 << 16];
    while (n > 0 && !at_end_) {
      const la_ssize_t got =
          archive_read_data(a_.get(), buf, std::min<std::uint64_t>(n, sizeof buf));
      core::require(got >= 0, "cannot decompress '" + path_ + "': " + error());
      at_end_ = got == 0;
      out->append(buf, static_cast<std::size_t>(got));
      n -= static_cast<std::uint64_t>(got);
    }
  }

 private:
  std::string error() const {
    const char* e = archive_error_string(a_.get());
    return e ? e : "damaged gzip data";
  }
  std::string path_;
  std::unique_ptr<archive, int (*)(archive*)> a_;
  bool at_end_ = false;
};

std::uint32_t be32(const std::string& s, std::size_t off) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + off;
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         p[3];
}

std::string dims_text(const std::vector<std::int64_t>& dims) {
  std::string s;
  for (const auto d : dims) s += (s.empty() ? "" : " x ") + std::to_string(d);
  return s;
}

}  // namespace

IdxFile read_idx_file(const std::string& path, std::uint32_t magic, std::int64_t max_bytes) {
  ByteStream in(path);
  const std::size_t rank = magic & 0xff, header = 4 + 4 * rank;
  std::string head;
  in.read(header, &head);
  char hex[16];
  std::snprintf(hex, sizeof hex, "0x%08x", magic);
  core::require(head.size() == header && be32(head, 0) == magic,
                "'" + path + "' is not an IDX file of unsigned-byte " +
                    (rank == 1 ? "labels" : "images") + " (magic " + hex + ")");
  IdxFile f;
  std::uint64_t bytes = 1;  // up to 2^96 from the header, checked
  bool fits = true;
  for (std::size_t k = 0; k < rank; ++k) {
    f.dims.push_back(be32(head, 4 + 4 * k));
    fits =
        fits && !__builtin_mul_overflow(bytes, static_cast<std::uint64_t>(f.dims.back()), &bytes);
  }
  const std::string shorter =
      "'" + path + "' is shorter than its header says (" + dims_text(f.dims) + " bytes)";
  std::error_code ec;
  const std::uint64_t size = in.gzipped() ? 0 : fs::file_size(path, ec);
  core::require(fits && (in.gzipped() || ec || size - header >= bytes), shorter);
  const auto limit = static_cast<std::uint64_t>(std::max<std::int64_t>(max_bytes, 0));
  core::require(limit >= header && bytes <= limit - header,
                "'" + path + "' declares " + dims_text(f.dims) + " bytes of data, more than the " +
                    "limit of " + std::to_string(max_bytes) + " bytes (shards --max-idx-bytes)");
  in.read(bytes, &f.data);  // what follows the declared data is never read
  core::require(f.data.size() == bytes, shorter);
  return f;
}

ClassFile read_class_file(const std::string& classes_yaml) {
  ClassFile f;
  try {
    const YAML::Node y = YAML::LoadFile(classes_yaml);
    core::require(y["classes"] && y["classes"].IsSequence(),
                  "shards: '" + classes_yaml + "' needs a list 'classes'");
    for (const auto& c : y["classes"]) f.classes.push_back(c.as<std::string>());
    if (y["templates"]) {
      core::require(y["templates"].IsSequence(),
                    "shards: 'templates' in '" + classes_yaml + "' must be a list");
      for (const auto& t : y["templates"]) f.templates.push_back(t.as<std::string>());
    }
  } catch (const YAML::Exception& e) {
    throw core::InputError("shards: cannot read the class file '" + classes_yaml +
                           "': " + e.what());
  }
  if (f.templates.empty()) f.templates.push_back("a photo of a {}.");
  for (const auto& t : f.templates)
    core::require(t.find("{}") != std::string::npos, "shards: the template '" + t + "' in '" +
                                                         classes_yaml +
                                                         "' has no '{}' for the class name");
  return f;
}

namespace {

// Pixels and labels without their headers.
struct Idx {
  std::string img, lab;
  std::int64_t n = 0, rows = 0, cols = 0;
};

Idx read_idx(const std::string& images, const std::string& labels, std::int64_t max_bytes) {
  try {
    IdxFile img = read_idx_file(images, 0x00000803, max_bytes);
    Idx x;
    x.n = img.dims[0];
    x.rows = img.dims[1];
    x.cols = img.dims[2];
    core::require(x.rows <= 65535 && x.cols <= 65535,
                  "'" + images + "' holds images of " + std::to_string(x.rows) + "x" +
                      std::to_string(x.cols) + " pixels, more than 65535 on a side");
    x.img = std::move(img.data);
    IdxFile lab = read_idx_file(labels, 0x00000801, max_bytes);
    core::require(lab.dims[0] == x.n,
                  "'" + labels + "' does not hold " + std::to_string(x.n) + " labels");
    x.lab = std::move(lab.data);
    return x;
  } catch (const core::InputError& e) {
    throw core::InputError(std::string("shards: ") + e.what());
  }
}

}  // namespace

ShardsReport shards_from_idx(const std::string& images, const std::string& labels,
                             const std::string& classes_yaml, const ShardWriterOptions& o,
                             std::uint64_t seed, std::int64_t limit) {
  auto cf = std::make_shared<ClassFile>(read_class_file(classes_yaml));
  auto x = std::make_shared<Idx>(read_idx(images, labels, o.max_idx_bytes));
  detail::InputSet in;
  in.size = limit > 0 ? std::min(limit, x->n) : x->n;
  in.what = "'" + images + "'";
  std::string id =
      images + "\n" + labels + "\n" + std::to_string(x->n) + "\n" + std::to_string(seed) + "\n";
  for (const auto& c : cf->classes) id += c + "\n";
  for (const auto& t : cf->templates) id += t + "\n";
  in.options_id = options_id("idx", id);
  in.identity = [](std::int64_t i) { return std::to_string(i); };
  in.prepare = [cf, x, classes_yaml, seed, &o](std::int64_t i, ImageProcessor&) {
    const int label = static_cast<unsigned char>(x->lab[static_cast<std::size_t>(i)]);
    core::require(label < static_cast<int>(cf->classes.size()),
                  "shards: label " + std::to_string(label) + " of image " + std::to_string(i) +
                      " has no class name in '" + classes_yaml + "'");
    Image im;
    im.width = static_cast<int>(x->cols);
    im.height = static_cast<int>(x->rows);
    im.channels = 1;
    const auto* px = reinterpret_cast<const std::uint8_t*>(x->img.data()) + i * x->rows * x->cols;
    im.pixels.assign(px, px + x->rows * x->cols);
    std::string tmpl =
        cf->templates[detail::mix_seed(seed, static_cast<std::uint64_t>(i)) % cf->templates.size()];
    tmpl.replace(tmpl.find("{}"), 2, cf->classes[static_cast<std::size_t>(label)]);
    detail::Prepared r;
    r.width = im.width;
    r.height = im.height;
    r.caption_chars = utf8_chars(tmpl);
    r.files = {{"jpg", encode_jpeg(
                           resizes(o, im.width, im.height) ? resize_shorter_side(im, o.resize) : im,
                           o.quality)},
               {"txt", std::move(tmpl)},
               {"cls", std::to_string(label)}};
    return r;
  };
  return detail::build_shards(in, o);
}

namespace {

// A template with its "{}" (or CLIP_benchmark's "{c}") replaced by `name`.
std::string fill_class(std::string t, const std::string& name) {
  for (const char* mark : {"{}", "{c}"})
    if (const auto p = t.find(mark); p != std::string::npos)
      return t.replace(p, std::string(mark).size(), name);
  return t + " " + name;
}

// The class folders of `folder` (sorted) and every image under each, with its label.
std::vector<std::pair<fs::path, int>> class_folder_images(const std::string& folder,
                                                          const ClassFile& cf,
                                                          const std::string& classes_what) {
  std::vector<fs::path> classes;
  for (const auto& e : fs::directory_iterator(folder)) {
    if (e.is_directory()) classes.push_back(e.path());
    core::require(e.is_directory() || !is_image_ext(e.path().extension().string()),
                  "shards: '" + e.path().string() + "' is not inside a class folder (with " +
                      "--classes every image is in the folder of its class)");
  }
  std::sort(classes.begin(), classes.end());
  core::require(classes.size() == cf.classes.size(),
                "shards: '" + folder + "' has " + std::to_string(classes.size()) +
                    " class folders but " + classes_what + " names " +
                    std::to_string(cf.classes.size()) + " classes");
  std::vector<std::pair<fs::path, int>> out;
  for (std::size_t c = 0; c < classes.size(); ++c) {
    std::vector<fs::path> images;
    for (const auto& e : fs::recursive_directory_iterator(classes[c]))
      if (e.is_regular_file() && is_image_ext(e.path().extension().string()))
        images.push_back(e.path());
    std::sort(images.begin(), images.end());
    for (auto& p : images) out.emplace_back(std::move(p), static_cast<int>(c));
  }
  core::require(!out.empty(), "shards: no image in the class folders of '" + folder + "'");
  return out;
}

}  // namespace

ShardsReport shards_from_class_folders(const std::string& folder, const ClassFile& classes,
                                       const std::string& classes_what, const ShardWriterOptions& o,
                                       std::uint64_t seed) {
  core::require(fs::is_directory(folder), "shards: '" + folder + "' is not a folder");
  auto cf = std::make_shared<ClassFile>(classes);
  if (cf->templates.empty()) cf->templates.push_back("a photo of a {}.");
  auto images = std::make_shared<std::vector<std::pair<fs::path, int>>>(
      class_folder_images(folder, *cf, classes_what));
  detail::InputSet in;
  in.size = static_cast<std::int64_t>(images->size());
  in.what = "the class folders of '" + folder + "'";
  std::string id = folder + "\n" + std::to_string(seed) + "\n";
  for (const auto& c : cf->classes) id += c + "\n";
  for (const auto& t : cf->templates) id += t + "\n";
  in.options_id = options_id("class-folders", id);
  in.identity = [images](std::int64_t i) {
    return (*images)[static_cast<std::size_t>(i)].first.string();
  };
  in.prepare = [images, cf, seed, &o](std::int64_t i, ImageProcessor& proc) {
    const auto& [path, label] = (*images)[static_cast<std::size_t>(i)];
    const auto& name = cf->classes[static_cast<std::size_t>(label)];
    const auto& t =
        cf->templates[detail::mix_seed(seed, static_cast<std::uint64_t>(i)) % cf->templates.size()];
    auto r =
        prepare_pair(path.string(), fill_class(t, name), {{"source", path.string()}}, "", o, proc);
    if (r.failure == detail::InputFailure::none) r.files.emplace_back("cls", std::to_string(label));
    return r;
  };
  return detail::build_shards(in, o);
}

void write_clip_benchmark_metadata(const std::string& out_dir, const std::string& split,
                                   const ClassFile& classes, const ShardsReport& report) {
  std::string names, templates;
  for (const auto& c : classes.classes) {
    core::require(c.find_first_of("\r\n") == std::string::npos,
                  "shards: the class name '" + c + "' has a line break (classnames.txt holds one " +
                      "name per line)");
    names += c + "\n";
  }
  for (auto t : classes.templates.empty() ? std::vector<std::string>{"a photo of a {}."}
                                          : classes.templates) {
    if (const auto p = t.find("{}"); p != std::string::npos) t.replace(p, 2, "{c}");
    templates += t + "\n";
  }
  core::write_file_atomic((fs::path(out_dir) / "classnames.txt").string(), names);
  core::write_file_atomic((fs::path(out_dir) / "zeroshot_classification_templates.txt").string(),
                          templates);
  core::write_file_atomic((fs::path(out_dir) / split / "nshards.txt").string(),
                          std::to_string(report.shards.size()) + "\n");
}

}  // namespace clipper::data
