#pragma once
// A small, portable generator (SplitMix64): the same seeds give the same numbers on every
// platform and standard library, which std:: distributions do not promise.
#include <cstdint>

namespace clipper::data::detail {

inline std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Mixes values into one seed (order matters).
inline std::uint64_t mix_seed(std::uint64_t a, std::uint64_t b) {
  std::uint64_t s = a ^ (b + 0x9E3779B97F4A7C15ULL + (a << 6) + (a >> 2));
  return splitmix64(s);
}
template <class... Rest>
inline std::uint64_t mix_seed(std::uint64_t a, std::uint64_t b, Rest... rest) {
  return mix_seed(mix_seed(a, b), static_cast<std::uint64_t>(rest)...);
}

class Rng {
 public:
  explicit Rng(std::uint64_t seed = 0) : state_(seed) {}
  std::uint64_t next() { return splitmix64(state_); }
  // Uniform in [0, 1).
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Uniform in [0, n), n > 0.
  std::uint64_t below(std::uint64_t n) { return next() % n; }
  std::uint64_t state() const { return state_; }

 private:
  std::uint64_t state_;
};

}  // namespace clipper::data::detail
