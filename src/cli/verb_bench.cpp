// clipper bench loader SHARDS --threads N: the data loader's throughput (samples/s and per CPU
// second).
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <iomanip>
#include <iostream>
#include <memory>

#include "verbs.hpp"

#include "clipper/core/error.hpp"
#include "clipper/data/loader.hpp"
#include "clipper/tokenizer/tokenizer.hpp"

namespace clipper::cli {
namespace {

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

struct LoaderBenchArgs {
  std::string shards, tokenizer = "clip";
  int threads = 1, size = 224;
  std::int64_t batch = 256, samples = 0, num_samples = 0, shuffle = 1000;
  bool eval = false;
};

void setup_bench_verb(CLI::App& app, Action* action) {
  auto* v = bench_group(app);
  auto a = std::make_shared<LoaderBenchArgs>();
  auto* l = v->add_subcommand("loader",
                              "Read, decode, crop, resize and tokenize shards; print samples/s");
  l->add_option("shards", a->shards, "shard pattern (data.train_shards syntax)")->required();
  l->add_option("--threads", a->threads, "loader worker threads")->capture_default_str();
  l->add_option("--batch", a->batch, "batch size")->capture_default_str();
  l->add_option("--size", a->size, "output image side")->capture_default_str();
  l->add_option("--samples", a->samples, "samples to time (0: one epoch)")->capture_default_str();
  l->add_option("--num-samples", a->num_samples, "samples per epoch when there is no sizes.json");
  l->add_option("--shuffle", a->shuffle, "sample shuffle buffer")->capture_default_str();
  l->add_option("--tokenizer", a->tokenizer, "tokenizer spec (clip | sentencepiece:PATH)")
      ->capture_default_str();
  l->add_flag("--eval", a->eval,
              "evaluation transform (resize + center crop) instead of RandomResizedCrop");
  l->callback([a, action] {
    *action = [a] {
      data::LoaderOptions o;
      o.shards = a->shards;
      o.workers = a->threads;
      o.batch_size = a->batch;
      o.image_size = a->size;
      o.train = !a->eval;
      o.num_samples = a->num_samples;
      o.sample_shuffle_buffer = a->shuffle;
      o.sample_shuffle_initial = std::min<std::int64_t>(a->shuffle, 100);
      auto tok = tokenizer::make_tokenizer(a->tokenizer, 77);
      const std::string tok_name = a->tokenizer;
      data::Loader loader(o, tok);
      const std::int64_t target = a->samples > 0 ? a->samples : loader.samples_per_epoch();
      // The first batch pays for thread start-up and the shuffle buffer's first fill: not timed.
      auto first = loader.next();
      core::require(first.has_value(), "bench: the shards gave no batch");
      const auto t0 = std::chrono::steady_clock::now();
      const double c0 = cpu_seconds();
      std::int64_t n = 0;
      while (n < target) {
        auto b = loader.next();
        if (!b) continue;  // epoch end: go on
        n += b->images.size(0);
      }
      const double wall =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double cpu = cpu_seconds() - c0;
      std::cout << std::fixed << std::setprecision(1) << "loader: " << n << " samples in " << wall
                << " s with " << a->threads << " thread(s): " << n / wall << " samples/s, "
                << n / wall / a->threads << " per thread, " << n / cpu << " per CPU second ("
                << a->size << " px, " << (a->eval ? "eval" : "train") << " transform, tokenizer "
                << tok_name << ")\n";
      const auto c = loader.counters();
      if (c.bad_samples() || c.shard_errors())
        std::cout << "bad data: " << c.to_json().dump() << "\n";
      return 0;
    };
  });
}

}  // namespace

// Without the data libraries there is no `bench loader`; `bench train` (verb_bench_train.cpp)
// creates the `bench` group itself (bench_group, in verbs.cpp, which every build has).
CLIPPER_REGISTER_VERB(bench, setup_bench_verb);

}  // namespace clipper::cli
