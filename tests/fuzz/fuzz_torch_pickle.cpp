// libFuzzer harness: the torch.save reader (state dict and training checkpoint). The first byte
// chooses what the rest is:
//   even: a whole file (zip) as torch.save writes it;
//   odd:  the pickle alone, put into a zip as data.pkl beside data/0 (24 bytes) and data/1
//         (4 bytes), so that mutations reach the unpickler instead of the zip's checksums.
// Under AddressSanitizer (scripts/fuzz.sh) it also checks a property: the peak of the bytes
// allocated while a file is read stays within a small multiple of the file's size: three times
// the reader's budget (a vector that doubles holds its old and new buffers for a moment), plus the
// pickle's copy, the storages (1 x) and views (4 x), plus 1 MiB for the zip reader and LibTorch.
// The budget here is 32 x the file + 64 KiB, so that a memo reference that multiplies memory
// without being charged shows up in inputs of a few kilobytes.
#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "../../src/io/torch_pickle.hpp"
#include "clipper/core/error.hpp"
#include "fuzz_util.hpp"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CLIPPER_FUZZ_PEAK 1
#include <sanitizer/allocator_interface.h>
#endif
#endif

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

const clipper::io::detail::PickleLimits kLimits{32, 64 << 10};

std::uint64_t peak_bound(std::uint64_t file_size) {
  const std::uint64_t budget =
      kLimits.built_bytes_per_file_byte * file_size + kLimits.built_bytes_floor;
  return 3 * budget + 8 * file_size + (1 << 20);
}

#ifdef CLIPPER_FUZZ_PEAK
std::atomic<std::int64_t> g_current{0}, g_peak{0};

void on_malloc(const volatile void*, std::size_t size) {
  const auto n = static_cast<std::int64_t>(size);
  const std::int64_t now = g_current.fetch_add(n) + n;
  std::int64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
}
void on_free(const volatile void* p) {
  g_current.fetch_sub(
      static_cast<std::int64_t>(__sanitizer_get_allocated_size(const_cast<const void*>(p))));
}
#endif

// Runs `read` and checks the peak of the bytes it allocated against the file's size.
template <typename Read>
void within_peak(const std::string& file, const char* what, Read read) {
#ifdef CLIPPER_FUZZ_PEAK
  static const bool installed = __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
  (void)installed;
  const std::int64_t base = g_current.load();
  g_peak.store(base);
#endif
  try {
    read();
  } catch (const clipper::core::InputError&) {
  }
#ifdef CLIPPER_FUZZ_PEAK
  const auto peak = static_cast<std::uint64_t>(g_peak.load() - base);
  const std::uint64_t bound = peak_bound(file.size());
  static const bool print = std::getenv("CLIPPER_FUZZ_PEAK_PRINT") != nullptr;
  if (print)
    std::fprintf(stderr, "%zu bytes as %s: peak %llu, bound %llu\n", file.size(), what,
                 static_cast<unsigned long long>(peak), static_cast<unsigned long long>(bound));
  if (peak > bound) {
    std::fprintf(stderr,
                 "fuzz_torch_pickle: reading %zu bytes as %s allocated %llu bytes at "
                 "peak, more than %llu\n",
                 file.size(), what, static_cast<unsigned long long>(peak),
                 static_cast<unsigned long long>(bound));
    std::abort();
  }
#endif
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string rest = clipper::fuzz::bytes_of(data + 1, size - 1);
  if (data[0] & 1) rest = zip_around(rest);
  within_peak(rest, "a state dict", [&] {
    clipper::io::detail::read_torch_save_state_dict_bytes(rest, "fuzz.pt", kLimits);
  });
  // The same bytes as a training checkpoint (epoch, name, optimizer state).
  within_peak(rest, "a training checkpoint", [&] {
    clipper::io::detail::read_torch_train_checkpoint_bytes(rest, "fuzz.pt", kLimits);
  });
  return 0;
}
