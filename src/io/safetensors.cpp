#include "clipper/io/safetensors.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "clipper/io/safetensors_writer.hpp"

namespace clipper::io {
namespace {

using core::InputError;
namespace fs = std::filesystem;

constexpr std::uint64_t kMaxHeader = 100ull << 20;  // the reference implementation's limit

struct DtypeName {
  const char* name;
  at::ScalarType type;
};
constexpr DtypeName kDtypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
    {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
    {"U8", at::kByte},    {"BOOL", at::kBool},
};

std::string known_dtypes() {
  std::string s;
  for (const auto& d : kDtypes) s += (s.empty() ? "" : ", ") + std::string(d.name);
  return s;
}

std::string sys_error(const std::string& what, const std::string& path) {
  return what + " '" + path + "': " + std::strerror(errno);
}

// Writes all of `size` bytes, retrying short writes.
void write_all(int fd, const void* data, std::size_t size, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw core::Error(sys_error("cannot write", path));
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

void read_all(int fd, void* data, std::size_t size, std::uint64_t offset, const std::string& path,
              const std::string& what) {
  char* p = static_cast<char*>(data);
  while (size > 0) {
    const ssize_t n = ::pread(fd, p, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw InputError(sys_error("cannot read " + what + " from", path));
    }
    if (n == 0)
      throw InputError("safetensors file '" + path + "' is truncated while reading " + what);
    p += n;
    size -= static_cast<std::size_t>(n);
    offset += static_cast<std::uint64_t>(n);
  }
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int release() {
    const int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_;
};

}  // namespace

std::string safetensors_dtype_name(at::ScalarType type) {
  for (const auto& d : kDtypes)
    if (d.type == type) return d.name;
  throw InputError(std::string("safetensors: cannot store dtype ") + c10::toString(type) +
                   " (supported: " + known_dtypes() + ")");
}

SafetensorsWriter::SafetensorsWriter(std::string path, const std::vector<SafetensorsEntry>& entries,
                                     const std::map<std::string, std::string>& metadata)
    : path_(std::move(path)), entries_(entries) {
  // Header first: names, dtypes, shapes and offsets in the given order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  std::set<std::string> seen;
  std::uint64_t offset = 0;
  for (const auto& e : entries_) {
    if (e.name.empty() || e.name == "__metadata__")
      throw InputError("safetensors '" + path_ + "': invalid tensor name '" + e.name + "'");
    if (!seen.insert(e.name).second)
      throw InputError("safetensors '" + path_ + "': tensor '" + e.name + "' is given twice");
    std::string dtype;
    try {
      dtype = safetensors_dtype_name(e.dtype);
    } catch (const InputError& err) {
      throw InputError("safetensors '" + path_ + "': tensor '" + e.name + "': " + err.what());
    }
    std::uint64_t bytes = c10::elementSize(e.dtype);
    for (const auto d : e.shape) bytes *= static_cast<std::uint64_t>(d);
    nlohmann::ordered_json entry;
    entry["dtype"] = dtype;
    entry["shape"] = e.shape;
    entry["data_offsets"] = {offset, offset + bytes};
    header[e.name] = entry;
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // align the data to 8 bytes
  const std::uint64_t n = text.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);

  const fs::path target(path_);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  fs::create_directories(dir);
  tmp_ = (dir / ("." + target.filename().string() + ".tmp." + std::to_string(::getpid()))).string();
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw core::Error(sys_error("cannot create", tmp_));
  try {
    put(len, 8);
    put(text.data(), text.size());
  } catch (...) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
    throw;
  }
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ < 0) return;
  ::close(fd_);
  ::unlink(tmp_.c_str());
}

void SafetensorsWriter::put(const void* data, std::size_t size) {
  write_all(fd_, data, size, tmp_);
  crc_.update(data, size);
}

void SafetensorsWriter::write(const at::Tensor& t) {
  core::require(fd_ >= 0 && next_ < entries_.size(),
                "safetensors '" + path_ + "': more tensors written than the header lists");
  const auto& e = entries_[next_];
  if (!t.defined() || t.scalar_type() != e.dtype || t.sizes().vec() != e.shape)
    throw InputError("safetensors '" + path_ + "': tensor '" + e.name +
                     "' is not the dtype and shape its header entry gives");
  const at::Tensor c = t.detach().to(at::kCPU).contiguous();
  put(c.data_ptr(), static_cast<std::size_t>(c.numel()) * c.element_size());
  ++next_;
}

core::FileDigest SafetensorsWriter::commit() {
  core::require(fd_ >= 0 && next_ == entries_.size(),
                "safetensors '" + path_ + "': committed with " + std::to_string(next_) + " of " +
                    std::to_string(entries_.size()) + " tensors written");
  try {
    if (::fsync(fd_) != 0) throw core::Error(sys_error("fsync failed for", tmp_));
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) throw core::Error(sys_error("cannot close", tmp_));
    core::rename_durable(tmp_, path_);
  } catch (...) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    ::unlink(tmp_.c_str());
    throw;
  }
  return crc_.digest();
}

core::FileDigest save_safetensors(const std::string& path, const TensorList& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsEntry> entries;
  entries.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    if (!t.defined())
      throw InputError("safetensors '" + path + "': tensor '" + name + "' is undefined");
    entries.push_back({name, t.scalar_type(), t.sizes().vec()});
  }
  SafetensorsWriter writer(path, entries, metadata);
  for (const auto& item : tensors) writer.write(item.second);
  return writer.commit();
}

namespace {

// Where the bytes come from: a file (pread) or memory.
struct Source {
  std::uint64_t size = 0;
  std::function<void(void* dst, std::size_t n, std::uint64_t offset, const std::string& what)> read;
};

struct Entry {
  std::string name;
  at::ScalarType type;
  std::vector<std::int64_t> shape;
  std::uint64_t begin, end;
};

// Refuses JSON nested deeper than a safetensors header needs (object > tensor > shape) before
// it is parsed, so no nesting can reach a recursive walk.
void check_json_depth(const std::string& text, const std::string& where) {
  constexpr int kMaxDepth = 8;
  int depth = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxDepth)
        throw InputError(where + ": bad header: the JSON is nested deeper than " +
                         std::to_string(kMaxDepth) + " levels");
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
}

std::string dims_text(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t k = 0; k < shape.size(); ++k) s += (k ? ", " : "") + std::to_string(shape[k]);
  return s + "]";
}

// The shape of an entry: non-negative integers whose product, in bytes of `type`, does not
// overflow. Returns the byte count.
std::uint64_t read_shape(const nlohmann::json& shape, at::ScalarType type, const std::string& tw,
                         std::vector<std::int64_t>* out) {
  if (!shape.is_array()) throw InputError(tw + ": bad header: shape is not a list");
  std::uint64_t bytes = c10::elementSize(type);
  for (std::size_t k = 0; k < shape.size(); ++k) {
    const auto& s = shape[k];
    if (!s.is_number_unsigned() || s.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX))
      throw InputError(tw + ": bad header: shape entry " + std::to_string(k) +
                       " is not a non-negative 64-bit integer");
    out->push_back(s.get<std::int64_t>());
    if (__builtin_mul_overflow(bytes, s.get<std::uint64_t>(), &bytes))
      throw InputError(tw + ": bad header: shape " + dims_text(*out) +
                       "... has more elements than 64 bits can count");
  }
  return bytes;
}

Entry read_entry(const std::string& name, const nlohmann::json& v, const std::string& where) {
  const std::string tw = where + ", tensor '" + name + "'";
  if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
    throw InputError(tw + ": bad header: expected an object with dtype, shape and data_offsets");
  Entry e;
  e.name = name;
  if (!v["dtype"].is_string()) throw InputError(tw + ": bad header: dtype is not a string");
  const std::string dt = v["dtype"].get<std::string>();
  const auto* d = std::find_if(std::begin(kDtypes), std::end(kDtypes),
                               [&](const DtypeName& x) { return dt == x.name; });
  if (d == std::end(kDtypes))
    throw InputError(tw + ": unknown dtype '" + dt.substr(0, 32) +
                     "' (supported: " + known_dtypes() + ")");
  e.type = d->type;
  const std::uint64_t want = read_shape(v["shape"], e.type, tw, &e.shape);
  const auto& off = v["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
      !off[1].is_number_unsigned() || off[0].get<std::uint64_t>() > off[1].get<std::uint64_t>())
    throw InputError(tw + ": bad header: data_offsets must be [begin, end] with integers " +
                     "0 <= begin <= end");
  e.begin = off[0].get<std::uint64_t>();
  e.end = off[1].get<std::uint64_t>();
  const std::string span = "[" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
  if (e.end - e.begin != want)
    throw InputError(tw + ": shape/size mismatch: shape " + dims_text(e.shape) + " of " + dt +
                     " needs " + std::to_string(want) + " bytes but data_offsets " + span +
                     " span " + std::to_string(e.end - e.begin));
  return e;
}

std::vector<Entry> read_header(const std::string& text, const std::string& where,
                               std::map<std::string, std::string>* metadata) {
  check_json_depth(text, where);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(where + ": bad header: not valid JSON (" + e.what() + ")");
  }
  if (!header.is_object()) throw InputError(where + ": bad header: the JSON is not an object");
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const auto& v = it.value();
    if (it.key() != "__metadata__") {
      entries.push_back(read_entry(it.key(), v, where));
      continue;
    }
    if (!v.is_object()) throw InputError(where + ": bad header: __metadata__ is not an object");
    for (auto m = v.begin(); m != v.end(); ++m) {
      if (!m.value().is_string())
        throw InputError(where + ": bad header: __metadata__ value '" + m.key() +
                         "' is not a string");
      if (metadata) (*metadata)[m.key()] = m.value().get<std::string>();
    }
  }
  return entries;
}

// The tensors must cover the data exactly, each within the file and the size limit.
void check_layout(std::vector<Entry>& entries, std::uint64_t data_size, std::uint64_t max_bytes,
                  const std::string& where) {
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t expect = 0;
  for (const auto& e : entries) {
    if (e.begin != expect)
      throw InputError(where + ", tensor '" + e.name + "': bad header: data_offsets start at " +
                       std::to_string(e.begin) + " but the previous tensor ends at " +
                       std::to_string(expect) +
                       " (tensors must cover the data without gaps or overlaps)");
    if (e.end > data_size)
      throw InputError(where + " is truncated: tensor '" + e.name + "' needs bytes [" +
                       std::to_string(e.begin) + ", " + std::to_string(e.end) +
                       ") of the data but only " + std::to_string(data_size) +
                       " bytes follow the header");
    if (e.end - e.begin > max_bytes)
      throw InputError(where + ", tensor '" + e.name + "': " + std::to_string(e.end - e.begin) +
                       " bytes exceed the limit of " + std::to_string(max_bytes) +
                       " (CLIPPER_MAX_TENSOR_BYTES)");
    expect = e.end;
  }
  if (expect != data_size)
    throw InputError(where + ": " + std::to_string(data_size - expect) +
                     " bytes after the last tensor are not described by the header");
}

TensorList load_from(const Source& src, const std::string& where,
                     std::map<std::string, std::string>* metadata, std::uint64_t max_bytes) {
  if (src.size < 8)
    throw InputError(where + " is too short (" + std::to_string(src.size) +
                     " bytes) to hold the 8-byte header length");
  unsigned char len[8];
  src.read(len, 8, 0, "the header length");
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  if (n > kMaxHeader)
    throw InputError(where + ": bad header: its length " + std::to_string(n) +
                     " exceeds the 100 MiB limit (not a safetensors file?)");
  if (n > src.size - 8)
    throw InputError(where + " is truncated: the header needs " + std::to_string(n) +
                     " bytes but only " + std::to_string(src.size - 8) + " follow the length");
  std::string text(n, '\0');
  src.read(text.data(), n, 8, "the header");
  auto entries = read_header(text, where, metadata);
  const std::uint64_t data_start = 8 + n;
  check_layout(entries, src.size - data_start, max_bytes ? max_bytes : max_tensor_bytes(), where);
  TensorList out;
  out.reserve(entries.size());
  for (const auto& e : entries) {
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(e.type));
    if (e.end > e.begin)
      src.read(t.data_ptr(), e.end - e.begin, data_start + e.begin, "tensor '" + e.name + "'");
    out.emplace_back(e.name, std::move(t));
  }
  return out;
}

}  // namespace

std::uint64_t max_tensor_bytes() {
  if (const char* v = std::getenv("CLIPPER_MAX_TENSOR_BYTES")) {
    char* end = nullptr;
    const unsigned long long n = std::strtoull(v, &end, 10);
    if (end == v || *end != '\0' || n == 0)
      throw InputError(std::string("CLIPPER_MAX_TENSOR_BYTES='") + v +
                       "' is not a positive number of bytes");
    return n;
  }
  return std::uint64_t{64} << 30;
}

TensorList load_safetensors(const std::string& path, std::map<std::string, std::string>* metadata,
                            std::uint64_t max_bytes) {
  const std::string where = "safetensors file '" + path + "'";
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw InputError(sys_error("cannot open safetensors file", path));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw InputError(sys_error("cannot stat", path));
  Source src;
  src.size = static_cast<std::uint64_t>(st.st_size);
  src.read = [&](void* dst, std::size_t n, std::uint64_t offset, const std::string& what) {
    read_all(fd.get(), dst, n, offset, path, what);
  };
  return load_from(src, where, metadata, max_bytes);
}

TensorList load_safetensors_bytes(const std::string& bytes, const std::string& name,
                                  std::map<std::string, std::string>* metadata,
                                  std::uint64_t max_bytes) {
  const std::string where = "safetensors file '" + name + "'";
  Source src;
  src.size = bytes.size();
  src.read = [&](void* dst, std::size_t n, std::uint64_t offset, const std::string& what) {
    if (offset > bytes.size() || n > bytes.size() - offset)
      throw InputError(where + " is truncated while reading " + what);
    std::memcpy(dst, bytes.data() + offset, n);
  };
  return load_from(src, where, metadata, max_bytes);
}

}  // namespace clipper::io
