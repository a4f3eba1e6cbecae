#include "clipper/io/npy.hpp"

#include <ATen/ATen.h>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"

namespace clipper::io {

void save_npy(const std::string& path, const at::Tensor& tensor) {
  const at::Tensor t = tensor.detach().cpu().contiguous();
  std::string descr;
  switch (t.scalar_type()) {
    case at::kFloat:
      descr = "<f4";
      break;
    case at::kDouble:
      descr = "<f8";
      break;
    case at::kLong:
      descr = "<i8";
      break;
    case at::kInt:
      descr = "<i4";
      break;
    case at::kByte:
      descr = "|u1";
      break;
    default:
      throw core::InputError("save_npy '" + path + "': unsupported dtype " +
                             std::string(c10::toString(t.scalar_type())));
  }
  std::string shape = "(";
  for (int64_t i = 0; i < t.dim(); ++i)
    shape += std::to_string(t.size(i)) + (t.dim() == 1 ? "," : i + 1 < t.dim() ? ", " : "");
  shape += ")";
  std::string header =
      "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Magic (6) + version (2) + header length (2) + header + newline, padded to a multiple of 64.
  const std::size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  const auto len = static_cast<std::uint16_t>(header.size());
  out.push_back(static_cast<char>(len & 0xff));
  out.push_back(static_cast<char>(len >> 8));
  out += header;
  out.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  core::write_file_atomic(path, out);
}

}  // namespace clipper::io
