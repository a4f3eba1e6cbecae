// parse_npy_vector: the multilabel .npy entries of CLIP_benchmark folders (numpy.save of a 1-D
// vector), format versions 1.0 to 3.0.
#include <ATen/ATen.h>

#include <cctype>
#include <cstring>
#include <string>

#include "clipper/core/error.hpp"
#include "clipper/eval/benchmark_dataset.hpp"

namespace clipper::eval {
namespace {

// The value of `key` in the header dict ('descr': '<f4', 'fortran_order': False, 'shape': (3,)).
std::string header_value(const std::string& h, const std::string& key) {
  const auto k = h.find("'" + key + "'");
  if (k == std::string::npos) return "";
  auto p = h.find(':', k);
  if (p == std::string::npos) return "";
  ++p;
  while (p < h.size() && h[p] == ' ') ++p;
  if (p < h.size() && h[p] == '(') return h.substr(p, h.find(')', p) - p + 1);
  if (p < h.size() && h[p] == '\'') return h.substr(p + 1, h.find('\'', p + 1) - p - 1);
  const auto e = h.find_first_of(",}", p);
  return h.substr(p, e == std::string::npos ? std::string::npos : e - p);
}

// "(3,)" or "(1, 3)" -> element count; -1 for any other shape.
std::int64_t vector_length(const std::string& shape) {
  std::vector<std::int64_t> dims;
  std::string cur;
  for (char c : shape) {
    if (std::isdigit(static_cast<unsigned char>(c))) {
      cur += c;
    } else if (!cur.empty()) {
      dims.push_back(std::stoll(cur));
      cur.clear();
    }
  }
  if (dims.size() == 1) return dims[0];
  if (dims.size() == 2 && dims[0] == 1) return dims[1];
  return -1;
}

at::ScalarType dtype_of(const std::string& descr) {
  if (descr == "|b1") return at::kBool;
  if (descr == "|u1") return at::kByte;
  if (descr == "|i1") return at::kChar;
  if (descr == "<i2") return at::kShort;
  if (descr == "<i4") return at::kInt;
  if (descr == "<i8") return at::kLong;
  if (descr == "<f2") return at::kHalf;
  if (descr == "<f4") return at::kFloat;
  if (descr == "<f8") return at::kDouble;
  return at::ScalarType::Undefined;
}

}  // namespace

at::Tensor parse_npy_vector(const std::string& bytes, const std::string& what) {
  const auto bad = [&](const std::string& why) {
    return core::InputError(what + ": the .npy label vector " + why);
  };
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) throw bad("is not a .npy file");
  const int major = static_cast<unsigned char>(bytes[6]);
  std::size_t len = 0, start = 0;
  if (major == 1) {
    len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) throw bad("has a truncated header");
    for (int i = 3; i >= 0; --i) len = (len << 8) | static_cast<unsigned char>(bytes[8 + i]);
    start = 12;
  } else {
    throw bad("has format version " + std::to_string(major) + " (1 to 3 are read)");
  }
  if (bytes.size() < start + len) throw bad("has a truncated header");
  const std::string h = bytes.substr(start, len);
  const auto descr = header_value(h, "descr");
  const auto type = dtype_of(descr);
  if (type == at::ScalarType::Undefined)
    throw bad("has dtype '" + descr + "' (bool, integers or floats, little-endian, are read)");
  const auto n = vector_length(header_value(h, "shape"));
  if (n < 0) throw bad("has shape " + header_value(h, "shape") + " (a 1-D vector is expected)");
  const auto elem = static_cast<std::size_t>(c10::elementSize(type));
  const std::size_t data = start + len;
  if (bytes.size() != data + elem * static_cast<std::size_t>(n))
    throw bad("holds " + std::to_string(bytes.size() - data) + " data bytes, its header says " +
              std::to_string(elem * n));
  auto t = at::empty({n}, type);
  std::memcpy(t.data_ptr(), bytes.data() + data, elem * static_cast<std::size_t>(n));
  return t.to(at::kFloat);
}

}  // namespace clipper::eval
