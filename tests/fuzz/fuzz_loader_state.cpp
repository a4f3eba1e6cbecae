// libFuzzer harness: Loader::load_state on arbitrary JSON (Loader::load_states on an array: the
// states of every saved rank, re-split), then one batch from the restored position. The loader
// reads a small dataset written once at start-up (two shards of four samples).
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/data/image.hpp"
#include "clipper/data/loader.hpp"
#include "clipper/data/shard_writer.hpp"
#include "fuzz_util.hpp"

namespace {

// start 1, each byte + 3, end 2, pad 0.
class ByteTokenizer : public clipper::tokenizer::Tokenizer {
 public:
  void encode(std::string_view text, std::int64_t* out) const override {
    std::fill(out, out + 8, 0);
    std::int64_t n = 0;
    out[n++] = 1;
    for (unsigned char c : text) {
      if (n == 7) break;
      out[n++] = c + 3;
    }
    out[n] = 2;
  }
  std::int64_t context_length() const override { return 8; }
  std::int64_t vocab_size() const override { return 259; }
};

std::string make_dataset() {
  clipper::data::ShardWriterOptions o;
  o.out_dir = clipper::fuzz::scratch_dir() + "/shards";
  o.prefix = "d";
  o.samples_per_shard = 4;
  o.digits = 1;
  clipper::data::ShardWriter w(o);
  clipper::data::Image img;
  img.width = img.height = 8;
  img.channels = 3;
  img.pixels.assign(8 * 8 * 3, 100);
  const std::string jpg = clipper::data::encode_jpeg(img, 90);
  for (int i = 0; i < 8; ++i) w.write("k" + std::to_string(i), {{"jpg", jpg}, {"txt", "a cat"}});
  w.finish();
  return o.out_dir + "/d-{0..1}.tar";
}

clipper::data::Loader& loader() {
  static std::unique_ptr<clipper::data::Loader> l = [] {
    clipper::core::log::Options lo;
    lo.console_level = clipper::core::log::parse_level("error");
    clipper::core::log::configure(lo);
    clipper::data::LoaderOptions o;
    o.shards = make_dataset();
    o.workers = 2;
    o.batch_size = 2;
    o.image_size = 8;
    o.shard_shuffle_buffer = 2;
    o.sample_shuffle_buffer = 4;
    o.sample_shuffle_initial = 2;
    o.prefetch_batches = 1;
    o.seed = 7;
    return std::make_unique<clipper::data::Loader>(o, std::make_shared<ByteTokenizer>());
  }();
  return *l;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded()) return 0;
  auto& l = loader();
  try {
    if (j.is_array())
      l.load_states(std::vector<nlohmann::json>(j.begin(), j.end()));
    else
      l.load_state(j);
    l.next();
  } catch (const clipper::core::InputError&) {
  }
  return 0;
}
