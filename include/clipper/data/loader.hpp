#pragma once
// The training/eval data loader: WebDataset shards -> batches of uint8 images and token ids.
//
//   auto opts = LoaderOptions::from_config(cfg.data, batch, 224, rank, world, seed);
//   Loader loader(opts, tokenizer);
//   while (auto b = loader.next()) { ... b->images [B,H,W,3] uint8, b->tokens [B,L] int64 ... }
//   // next() returns nullopt once at the end of each epoch; the following call starts the next.
//
// The batch stream is a pure function of (seed, epoch, rank, world_size, workers) and the data:
// each worker thread owns a fixed part of the epoch and a generator seeded from those numbers, and
// sample j of a rank's epoch always comes from worker j % workers. See docs/data.md.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "clipper/config/config.hpp"
#include "clipper/data/image.hpp"
#include "clipper/data/regions.hpp"
#include "clipper/tokenizer/tokenizer.hpp"

namespace clipper::data {

// What was skipped, by kind. Travels in the loader state; cumulative over epochs. The kinds, their
// JSON names and messages are one table in src/data/counters.cpp.
struct BadDataCounters {
  std::int64_t samples = 0;           // good samples delivered
  std::int64_t image_corrupt = 0;     // undecodable or truncated image
  std::int64_t image_too_large = 0;   // more pixels than data.max_image_pixels
  std::int64_t missing_image = 0;     // no file with one of the image keys
  std::int64_t missing_text = 0;      // no text file, or the json field is absent
  std::int64_t missing_label = 0;     // no integer label entry (when label_key is set)
  std::int64_t bad_regions = 0;       // regions_key member holds invalid regions (parse_regions)
  std::int64_t shard_unreadable = 0;  // cannot be opened or is not a tar
  std::int64_t shard_truncated = 0;   // tar ends inside an entry
  std::int64_t pipe_failed = 0;       // pipe: command exited non-zero
  std::int64_t repeated = 0;          // samples read a second time to fill a rank's epoch
  // Good samples delivered without regions (no regions_key member, or none listed in it), with
  // LoaderOptions::regions_key set; 0 without it.
  std::int64_t without_regions = 0;

  std::int64_t bad_samples() const;   // the per-sample kinds
  std::int64_t shard_errors() const;  // unreadable, truncated, pipe failed
  // bad / (good + bad); 0 before any sample.
  double bad_fraction() const;
  nlohmann::json to_json() const;
  static BadDataCounters from_json(const nlohmann::json& j);
  bool operator==(const BadDataCounters& o) const { return to_json() == o.to_json(); }
};

struct LoaderOptions {
  std::string shards;                  // data.train_shards syntax
  std::vector<double> source_weights;  // per "::" source (resampled mode)
  std::int64_t num_samples = 0;        // samples per epoch (all ranks); 0: from sizes.json
  std::vector<std::string> image_keys{"jpg", "png", "jpeg", "webp"};
  std::string label_key;  // e.g. "cls": an integer class index per sample (evaluation); empty: none
  std::string text_key = "txt";  // or "json:FIELD" (FIELD may be a dotted path)
  // e.g. "json": the member whose "regions" list (docs/data.md "Regions") each sample's
  // Batch::regions carries, for SigLIP 2's LocCa tasks; empty: regions are not read
  std::string regions_key;
  int workers = 2;
  bool resampled = false;
  std::int64_t shard_shuffle_buffer = 2000;   // 0: shards in list order
  std::int64_t sample_shuffle_buffer = 5000;  // 0/1: no sample shuffle
  std::int64_t sample_shuffle_initial = 1000;
  double max_bad_fraction = 0.01;
  std::int64_t bad_check_min_samples = 200;  // the fraction is checked once this many were seen
  std::int64_t max_image_pixels = 89478485;
  std::int64_t max_sample_bytes = std::int64_t{256} << 20;        // larger samples: skipped
  std::int64_t max_shuffle_buffer_bytes = std::int64_t{2} << 30;  // per worker
  Transparency transparency;  // data.transparency: what becomes of transparent pixels

  std::int64_t batch_size = 64;
  int image_size = 224;
  bool train = true;  // RandomResizedCrop; false: resize + center crop, no shuffles
  // Evaluation (train = false): the model's preprocess_cfg, as OpenCLIP's image_transform.
  model::ResizeMode resize_mode = model::ResizeMode::shortest;
  model::Interpolation interpolation = model::Interpolation::bicubic;
  // NaFlex (both > 0, docs/data.md): each picture keeps its aspect ratio under a budget of
  // naflex_max_tokens patches of naflex_patch pixels; Batch::images are then patches.
  int naflex_patch = 0;
  std::int64_t naflex_max_tokens = 0;
  // Token-budget batches (NaFlex, docs/data.md "Token-budget batches"): batch k of a rank holds
  // naflex_max_tokens_per_batch / L pictures of at most L patches, L drawn from naflex_seq_lens
  // (seed, epoch, k, rank); batch_size is then unused. Empty: batches of batch_size pictures.
  std::vector<std::int64_t> naflex_seq_lens;
  std::int64_t naflex_max_tokens_per_batch = 0;
  bool token_budget() const { return !naflex_seq_lens.empty(); }
  bool drop_last = false;  // true: every rank gets floor(N / (W*B)) full batches per epoch
  int rank = 0;
  int world_size = 1;
  std::uint64_t seed = 0;
  std::string pin_memory = "auto";  // auto (when CUDA is present) | on | off
  int prefetch_batches = 2;
  // A mid-epoch state of another world size or worker count is re-split (Loader::load_states);
  // with this set, the rest of that epoch is skipped instead and the next one starts (an opt-out).
  bool reshard_to_next_epoch = false;

  static LoaderOptions from_config(const config::DataConfig& data, std::int64_t batch_size,
                                   int image_size, int rank, int world_size, std::uint64_t seed);
};

struct Batch {
  at::Tensor images;  // uint8 [B, H, W, 3], RGB, channels last (normalise on the device)
                      // NaFlex: uint8 [B, max_tokens, P*P*3], picture b's grids[b] patches first
                      // (token-budget batches: [B_k, L_k, P*P*3], B_k and L_k per batch)
  at::Tensor grids;   // NaFlex: int64 [B, 2], each picture's (rows, columns) of patches
  at::Tensor tokens;  // int64 [B, L]
  at::Tensor labels;  // int64 [B] when LoaderOptions::label_key is set, else undefined
  std::vector<std::string> keys;
  // With LoaderOptions::regions_key set: one entry per sample, its regions as the picture in
  // `images` shows them (the loader's crop applied, data::crop_regions), empty when it has none.
  // Without regions_key: empty.
  std::vector<std::vector<Region>> regions;
  std::int64_t epoch = 0;
  std::int64_t index_in_epoch = 0;  // batch index within the epoch on this rank
};

class Loader {
 public:
  Loader(LoaderOptions options, std::shared_ptr<const tokenizer::Tokenizer> tokenizer);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // The next batch; nullopt once at the end of each epoch. Throws InputError when the bad-data
  // fraction passes max_bad_fraction or no usable sample can be read.
  std::optional<Batch> next();
  // Whether next() would return at once: starts the loader and waits up to `seconds` for the
  // next batch (or an error, an epoch's end). A rank whose workers first skip samples of other
  // ranks (a re-split resume) may take long; the trainer waits for it in short agreements.
  bool ready(double seconds);
  // Batches every rank delivers per epoch (the last one may be partial unless drop_last).
  std::int64_t batches_per_epoch() const;
  // Samples this rank delivers per epoch.
  std::int64_t samples_per_epoch() const;
  // Samples in the dataset (all ranks), as used for the epoch length.
  std::int64_t dataset_size() const;

  // Where the last batch next() returned (or a loaded state) leaves this rank: the epoch and the
  // batches still to come in it, 0 after its last one. In a re-split epoch (load_states) that is
  // this rank's share of the saved epoch's rest; every rank gets the same figures.
  struct Position {
    std::int64_t epoch = 0;
    std::int64_t batches_left = 0;
  };
  Position position() const;

  // The position after the last batch next() returned (per rank: the checkpoint keeps one per
  // rank).
  nlohmann::json state() const;
  // Continues exactly where `state` was taken. Call before the first next() or at any time.
  // A state of another world size or worker count resumes here only at an epoch boundary (or
  // when it is the only rank's); a mid-epoch one needs load_states.
  void load_state(const nlohmann::json& state);
  // `states[r]` is saved rank r's state, all ranks of one checkpoint. The same layout: this rank
  // continues its own. Another world size, worker count or samples per rank: the rest of the
  // saved epoch is re-split across this layout, each sample once (docs/data.md, "Another world
  // size or worker count"), and the next epoch follows this layout's plan.
  void load_states(const std::vector<nlohmann::json>& states);
  // Counters as of the last batch next() returned.
  BadDataCounters counters() const;
  const LoaderOptions& options() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace clipper::data
