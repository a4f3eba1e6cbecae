// libFuzzer harness: the torch.save reader (state dict and training checkpoint). The first byte
// chooses what the rest is:
//   even: a whole file (zip) as torch.save writes it;
//   odd:  the pickle alone, put into a zip as data.pkl beside data/0 (24 bytes) and data/1
//         (4 bytes), so that mutations reach the unpickler instead of the zip's checksums.
#include <caffe2/serialize/inline_container.h>

#include <cstdint>

#include "../../src/io/torch_pickle.hpp"
#include "clipper/core/error.hpp"
#include "fuzz_util.hpp"

namespace {

std::string zip_around(const std::string& pickle) {
  std::string out;
  caffe2::serialize::PyTorchStreamWriter w([&](const void* p, std::size_t n) {
    out.append(static_cast<const char*>(p), n);
    return n;
  });
  const std::string d0(24, '\x01'), d1(4, '\x02');
  w.writeRecord("data.pkl", pickle.data(), pickle.size());
  w.writeRecord("data/0", d0.data(), d0.size());
  w.writeRecord("data/1", d1.data(), d1.size());
  w.writeEndOfFile();
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string rest = clipper::fuzz::bytes_of(data + 1, size - 1);
  if (data[0] & 1) rest = zip_around(rest);
  try {
    clipper::io::detail::read_torch_save_state_dict_bytes(rest, "fuzz.pt");
  } catch (const clipper::core::InputError&) {
  }
  try {  // the same bytes as a training checkpoint (epoch, name, optimizer state)
    clipper::io::detail::read_torch_train_checkpoint_bytes(rest, "fuzz.pt");
  } catch (const clipper::core::InputError&) {
  }
  return 0;
}
