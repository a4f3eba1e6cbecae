#include "clipper/data/shard_writer.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/data/image.hpp"
#include "clipper/data/shard_list.hpp"
#include "rng.hpp"

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

void ShardWriter::open_next() {
  const std::string name =
      o_.prefix + "-" + padded(static_cast<std::int64_t>(sizes_.size()), o_.digits) + ".tar";
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

ShardsReport ShardWriter::finish() {
  if (finished_) return report_;
  close_current();
  finished_ = true;
  // Merge into sizes.json (other prefixes in the same folder keep their entries).
  nlohmann::json j = nlohmann::json::object();
  if (auto old = read_sizes_json(o_.out_dir))
    for (const auto& [k, v] : *old) j[k] = v;
  for (const auto& [k, v] : sizes_) j[k] = v;
  core::write_file_atomic((fs::path(o_.out_dir) / "sizes.json").string(), j.dump(2) + "\n");
  if (!sizes_.empty()) {
    const std::string last = padded(static_cast<std::int64_t>(sizes_.size()) - 1, o_.digits);
    report_.pattern = (fs::path(o_.out_dir) / (o_.prefix + "-")).string() +
                      (sizes_.size() == 1 ? last : "{" + padded(0, o_.digits) + ".." + last + "}") +
                      ".tar";
  }
  return report_;
}

std::string prepare_image(const std::string& bytes, const ShardWriterOptions& o,
                          const std::string& what) {
  const bool jpeg = bytes.size() > 3 && static_cast<unsigned char>(bytes[0]) == 0xFF &&
                    static_cast<unsigned char>(bytes[1]) == 0xD8;
  if (o.resize <= 0 && jpeg) return bytes;
  ImageProcessor proc(TransformSpec{}, std::int64_t{1} << 31);
  Image img;
  std::string why;
  core::require(proc.decode(bytes, &img, &why, true) == ImageError::none,
                "shards: cannot decode the image '" + what + "': " + why);
  return encode_jpeg(o.resize > 0 ? resize_shorter_side(img, o.resize) : img, o.quality);
}

namespace {

std::string read_file_or_empty(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return {};
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string trim_caption(std::string s) {
  while (!s.empty() &&
         (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t'))
    s.pop_back();
  std::size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  return s.substr(i);
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

std::string sample_key(std::int64_t i) {
  return padded(i, 9);
}

}  // namespace

ShardsReport shards_from_folder(const std::string& folder, const ShardWriterOptions& o) {
  core::require(fs::is_directory(folder), "shards: '" + folder + "' is not a folder");
  std::vector<fs::path> images;
  for (const auto& e : fs::recursive_directory_iterator(folder))
    if (e.is_regular_file() && is_image_ext(e.path().extension().string()))
      images.push_back(e.path());
  std::sort(images.begin(), images.end());
  ShardWriter writer(o);
  std::int64_t skipped = 0, index = 0;
  for (const auto& p : images) {
    auto caption_path = p;
    caption_path.replace_extension(".txt");
    if (!fs::exists(caption_path)) {
      CLIPPER_WARN("shards: no caption " << caption_path.string() << " for " << p.string()
                                         << "; skipped");
      ++skipped;
      continue;
    }
    std::string img;
    try {
      img = prepare_image(read_file_or_empty(p), o, p.string());
    } catch (const core::InputError& e) {
      CLIPPER_WARN(e.what() << "; skipped");
      ++skipped;
      continue;
    }
    writer.write(sample_key(index++),
                 {{"jpg", img}, {"txt", trim_caption(read_file_or_empty(caption_path))}});
  }
  core::require(index > 0, "shards: no image with a caption found in '" + folder + "'");
  auto r = writer.finish();
  r.skipped = skipped;
  return r;
}

ShardsReport shards_from_csv(const std::string& table, const std::string& image_column,
                             const std::string& caption_column, char separator,
                             const ShardWriterOptions& o) {
  std::ifstream in(table);
  core::require(static_cast<bool>(in), "shards: cannot read the table '" + table + "'");
  std::string line;
  core::require(static_cast<bool>(std::getline(in, line)),
                "shards: the table '" + table + "' is empty");
  const auto header = parse_row(line, separator);
  int ic = -1, cc = -1;
  for (std::size_t i = 0; i < header.size(); ++i) {
    const auto h = trim_caption(header[i]);
    if (h == image_column) ic = static_cast<int>(i);
    if (h == caption_column) cc = static_cast<int>(i);
  }
  core::require(ic >= 0, "shards: the table '" + table + "' has no column '" + image_column +
                             "' (header: " + line + ")");
  core::require(cc >= 0, "shards: the table '" + table + "' has no column '" + caption_column +
                             "' (header: " + line + ")");
  const fs::path base = fs::path(table).parent_path();
  ShardWriter writer(o);
  std::int64_t skipped = 0, index = 0, row = 1;
  while (std::getline(in, line)) {
    ++row;
    if (trim_caption(line).empty()) continue;
    const auto cols = parse_row(line, separator);
    if (static_cast<int>(cols.size()) <= std::max(ic, cc)) {
      CLIPPER_WARN("shards: " << table << " row " << row << " has " << cols.size()
                              << " columns; skipped");
      ++skipped;
      continue;
    }
    fs::path p = cols[static_cast<std::size_t>(ic)];
    if (p.is_relative()) p = base / p;
    const std::string bytes = read_file_or_empty(p);
    std::string img;
    try {
      core::require(!bytes.empty(), "shards: cannot read '" + p.string() + "'");
      img = prepare_image(bytes, o, p.string());
    } catch (const core::InputError& e) {
      CLIPPER_WARN(e.what() << " (" << table << " row " << row << "); skipped");
      ++skipped;
      continue;
    }
    writer.write(sample_key(index++), {{"jpg", img}, {"txt", cols[static_cast<std::size_t>(cc)]}});
  }
  core::require(index > 0, "shards: no readable row in '" + table + "'");
  auto r = writer.finish();
  r.skipped = skipped;
  return r;
}

std::string read_maybe_gzip(const std::string& path) {
  std::string raw = read_file_or_empty(path);
  core::require(!raw.empty() || fs::exists(path), "cannot read '" + path + "'");
  if (raw.size() < 2 || static_cast<unsigned char>(raw[0]) != 0x1f ||
      static_cast<unsigned char>(raw[1]) != 0x8b)
    return raw;
  archive* a = archive_read_new();
  archive_read_support_filter_all(a);
  archive_read_support_format_raw(a);
  std::string out;
  bool ok = archive_read_open_memory(a, raw.data(), raw.size()) == ARCHIVE_OK;
  archive_entry* e = nullptr;
  ok = ok && archive_read_next_header(a, &e) == ARCHIVE_OK;
  char buf[1 << 16];
  while (ok) {
    const la_ssize_t n = archive_read_data(a, buf, sizeof buf);
    if (n < 0) ok = false;
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  const std::string err = archive_error_string(a) ? archive_error_string(a) : "damaged gzip data";
  archive_read_free(a);
  core::require(ok, "cannot decompress '" + path + "': " + err);
  return out;
}

ShardsReport shards_from_idx(const std::string& images, const std::string& labels,
                             const std::string& classes_yaml, const ShardWriterOptions& o,
                             std::uint64_t seed, std::int64_t limit) {
  std::vector<std::string> classes, templates;
  try {
    const YAML::Node y = YAML::LoadFile(classes_yaml);
    core::require(y["classes"] && y["classes"].IsSequence(),
                  "shards: '" + classes_yaml + "' needs a list 'classes'");
    for (const auto& c : y["classes"]) classes.push_back(c.as<std::string>());
    if (y["templates"]) {
      core::require(y["templates"].IsSequence(),
                    "shards: 'templates' in '" + classes_yaml + "' must be a list");
      for (const auto& t : y["templates"]) templates.push_back(t.as<std::string>());
    }
  } catch (const YAML::Exception& e) {
    throw core::InputError("shards: cannot read the class file '" + classes_yaml +
                           "': " + e.what());
  }
  if (templates.empty()) templates.push_back("a photo of a {}.");
  for (const auto& t : templates)
    core::require(t.find("{}") != std::string::npos, "shards: the template '" + t + "' in '" +
                                                         classes_yaml +
                                                         "' has no '{}' for the class name");

  const std::string img = read_maybe_gzip(images), lab = read_maybe_gzip(labels);
  auto be32 = [](const std::string& s, std::size_t off) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + off;
    return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
           p[3];
  };
  core::require(
      img.size() >= 16 && be32(img, 0) == 0x00000803,
      "shards: '" + images + "' is not an IDX file of unsigned-byte images (magic 0x00000803)");
  core::require(
      lab.size() >= 8 && be32(lab, 0) == 0x00000801,
      "shards: '" + labels + "' is not an IDX file of unsigned-byte labels (magic 0x00000801)");
  const std::int64_t n = be32(img, 4), rows = be32(img, 8), cols = be32(img, 12);
  core::require(static_cast<std::int64_t>(img.size()) >= 16 + n * rows * cols,
                "shards: '" + images + "' is shorter than its header says (" + std::to_string(n) +
                    " images of " + std::to_string(rows) + "x" + std::to_string(cols) + ")");
  core::require(be32(lab, 4) == n && static_cast<std::int64_t>(lab.size()) >= 8 + n,
                "shards: '" + labels + "' does not hold " + std::to_string(n) + " labels");
  const std::int64_t count = limit > 0 ? std::min(limit, n) : n;
  ShardWriter writer(o);
  Image im;
  im.width = static_cast<int>(cols);
  im.height = static_cast<int>(rows);
  im.channels = 1;
  for (std::int64_t i = 0; i < count; ++i) {
    const int label = static_cast<unsigned char>(lab[static_cast<std::size_t>(8 + i)]);
    core::require(label < static_cast<int>(classes.size()),
                  "shards: label " + std::to_string(label) + " of image " + std::to_string(i) +
                      " has no class name in '" + classes_yaml + "'");
    const auto* px = reinterpret_cast<const std::uint8_t*>(img.data()) + 16 + i * rows * cols;
    im.pixels.assign(px, px + rows * cols);
    const std::string jpg =
        encode_jpeg(o.resize > 0 ? resize_shorter_side(im, o.resize) : im, o.quality);
    std::string tmpl =
        templates[detail::mix_seed(seed, static_cast<std::uint64_t>(i)) % templates.size()];
    tmpl.replace(tmpl.find("{}"), 2, classes[static_cast<std::size_t>(label)]);
    writer.write(sample_key(i), {{"jpg", jpg}, {"txt", tmpl}, {"cls", std::to_string(label)}});
  }
  return writer.finish();
}

}  // namespace clipper::data
