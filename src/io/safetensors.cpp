#include "clipper/io/safetensors.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"

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

core::FileDigest save_safetensors(const std::string& path, const TensorList& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  // Header first: names, dtypes, shapes and offsets in the given order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  std::set<std::string> seen;
  std::vector<at::Tensor> cpu;
  cpu.reserve(tensors.size());
  std::uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name == "__metadata__")
      throw InputError("safetensors '" + path + "': invalid tensor name '" + name + "'");
    if (!seen.insert(name).second)
      throw InputError("safetensors '" + path + "': tensor '" + name + "' is given twice");
    if (!t.defined())
      throw InputError("safetensors '" + path + "': tensor '" + name + "' is undefined");
    std::string dtype;
    try {
      dtype = safetensors_dtype_name(t.scalar_type());
    } catch (const InputError& e) {
      throw InputError("safetensors '" + path + "': tensor '" + name + "': " + e.what());
    }
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    const std::uint64_t bytes = static_cast<std::uint64_t>(c.numel()) * c.element_size();
    nlohmann::ordered_json entry;
    entry["dtype"] = dtype;
    entry["shape"] = c.sizes().vec();
    entry["data_offsets"] = {offset, offset + bytes};
    header[name] = entry;
    offset += bytes;
    cpu.push_back(std::move(c));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // align the data to 8 bytes
  const std::uint64_t n = text.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);

  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  fs::create_directories(dir);
  const std::string tmp =
      (dir / ("." + target.filename().string() + ".tmp." + std::to_string(::getpid()))).string();
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) throw core::Error(sys_error("cannot create", tmp));
  core::Crc32 crc;
  auto write = [&](const void* data, std::size_t size) {
    write_all(fd.get(), data, size, tmp);
    crc.update(data, size);
  };
  try {
    write(len, 8);
    write(text.data(), text.size());
    for (const auto& c : cpu)
      write(c.data_ptr(), static_cast<std::size_t>(c.numel()) * c.element_size());
    if (::fsync(fd.get()) != 0) throw core::Error(sys_error("fsync failed for", tmp));
    if (::close(fd.release()) != 0) throw core::Error(sys_error("cannot close", tmp));
    core::rename_durable(tmp, path);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  return crc.digest();
}

TensorList load_safetensors(const std::string& path, std::map<std::string, std::string>* metadata) {
  const std::string where = "safetensors file '" + path + "'";
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw InputError(sys_error("cannot open safetensors file", path));
  std::error_code ec;
  const std::uint64_t size = fs::file_size(path, ec);
  if (ec) throw InputError("cannot stat " + where + ": " + ec.message());
  if (size < 8)
    throw InputError(where + " is too short (" + std::to_string(size) +
                     " bytes) to hold the 8-byte header length");
  unsigned char len[8];
  read_all(fd.get(), len, 8, 0, path, "the header length");
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  if (n > kMaxHeader)
    throw InputError(where + ": bad header: its length " + std::to_string(n) +
                     " exceeds the 100 MiB limit (not a safetensors file?)");
  if (n > size - 8)
    throw InputError(where + " is truncated: the header needs " + std::to_string(n) +
                     " bytes but only " + std::to_string(size - 8) + " follow the length");
  std::string text(n, '\0');
  read_all(fd.get(), text.data(), n, 8, path, "the header");

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(where + ": bad header: not valid JSON (" + e.what() + ")");
  }
  if (!header.is_object()) throw InputError(where + ": bad header: the JSON is not an object");

  struct Entry {
    std::string name;
    at::ScalarType type;
    std::vector<std::int64_t> shape;
    std::uint64_t begin, end;
  };
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw InputError(where + ": bad header: __metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          throw InputError(where + ": bad header: __metadata__ value '" + m.key() +
                           "' is not a string");
        if (metadata) (*metadata)[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string tw = where + ", tensor '" + name + "'";
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") ||
        !v.contains("data_offsets"))
      throw InputError(tw + ": bad header: expected an object with dtype, shape and data_offsets");
    Entry e;
    e.name = name;
    if (!v["dtype"].is_string()) throw InputError(tw + ": bad header: dtype is not a string");
    const std::string dt = v["dtype"].get<std::string>();
    const auto* d = std::find_if(std::begin(kDtypes), std::end(kDtypes),
                                 [&](const DtypeName& x) { return dt == x.name; });
    if (d == std::end(kDtypes))
      throw InputError(tw + ": unknown dtype '" + dt + "' (supported: " + known_dtypes() + ")");
    e.type = d->type;
    if (!v["shape"].is_array()) throw InputError(tw + ": bad header: shape is not a list");
    std::uint64_t numel = 1;
    for (const auto& s : v["shape"]) {
      if (!s.is_number_unsigned())
        throw InputError(tw + ": bad header: shape " + v["shape"].dump() +
                         " must hold non-negative integers");
      e.shape.push_back(s.get<std::int64_t>());
      numel *= s.get<std::uint64_t>();
    }
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned() || off[0].get<std::uint64_t>() > off[1].get<std::uint64_t>())
      throw InputError(tw + ": bad header: data_offsets " + off.dump() +
                       " must be [begin, end] with begin <= end");
    e.begin = off[0].get<std::uint64_t>();
    e.end = off[1].get<std::uint64_t>();
    const std::uint64_t want = numel * c10::elementSize(e.type);
    if (e.end - e.begin != want)
      throw InputError(tw + ": shape/size mismatch: shape " + v["shape"].dump() + " of " + dt +
                       " needs " + std::to_string(want) + " bytes but data_offsets " + off.dump() +
                       " span " + std::to_string(e.end - e.begin));
    entries.push_back(std::move(e));
  }

  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const std::uint64_t data_start = 8 + n;
  const std::uint64_t data_size = size - data_start;
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
    expect = e.end;
  }
  if (expect != data_size)
    throw InputError(where + ": " + std::to_string(data_size - expect) +
                     " bytes after the last tensor are not described by the header");

  TensorList out;
  out.reserve(entries.size());
  for (const auto& e : entries) {
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(e.type));
    if (e.end > e.begin)
      read_all(fd.get(), t.data_ptr(), e.end - e.begin, data_start + e.begin, path,
               "tensor '" + e.name + "'");
    out.emplace_back(e.name, std::move(t));
  }
  return out;
}

}  // namespace clipper::io
