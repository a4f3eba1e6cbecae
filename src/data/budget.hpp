#pragma once
// Internal to the loader: token-budget batches (NaFlex, docs/data.md "Token-budget batches").
// Batch k of a rank holds max_tokens_per_batch / L pictures of at most L patches, L drawn from
// LoaderOptions::naflex_seq_lens. The counts are a pure function of (seed, epoch, rank, k) and
// the samples the rank delivers, so a sample position (the loader state) still says exactly
// where a rank is.
#include <cstdint>
#include <string>
#include <vector>

#include "clipper/data/loader.hpp"

namespace clipper::data::detail {

struct BudgetBatch {
  std::int64_t seq_len = 0, count = 0;
};

// The settings checked: every length in [1, 2^20], max_tokens_per_batch at least the largest and
// at most 2^40, a NaFlex model. Throws InputError naming the data.* key.
void check_token_budget(const LoaderOptions& o);

// The epoch's batches before they are ordered: lengths drawn from (seed, salt) one after the
// other, each batch max_tokens_per_batch / length pictures, until `avail` samples are covered.
// Without drop_last the last batch is cut to what is left (the counts add up to `avail`); with
// drop_last only full batches, ending before the first that does not fit.
std::vector<BudgetBatch> budget_batches(const LoaderOptions& o, std::uint64_t salt,
                                        std::int64_t avail);

// Samples per rank and epoch for `avail` available: avail, or with drop_last what full batches
// hold.
std::int64_t budget_rank_samples(const LoaderOptions& o, std::uint64_t salt, std::int64_t avail);

// One rank's batches of an epoch (or of the re-split rest of one: `salt` is then the batch index
// the rest starts at): budget_batches for `rank_total` samples, ordered by a permutation drawn
// from (seed, epoch, salt), the same on every rank, and rank r's batch k is entry (k + r) mod S of
// it. Every rank so gets every batch once: the same samples and the same number of batches S,
// while the ranks' counts at one step differ.
class RankSchedule {
 public:
  RankSchedule(const LoaderOptions& o, std::int64_t epoch, std::uint64_t salt,
               std::int64_t rank_total);
  std::int64_t batches() const { return static_cast<std::int64_t>(batches_.size()); }
  const BudgetBatch& batch(std::int64_t k) const { return batches_[static_cast<std::size_t>(k)]; }
  // Samples of the rank before its batch k (k <= batches()).
  std::int64_t start(std::int64_t k) const { return starts_[static_cast<std::size_t>(k)]; }
  // The sequence length of the batch that holds the rank's sample `position`.
  std::int64_t seq_len_at(std::int64_t position) const;

 private:
  std::vector<BudgetBatch> batches_;
  std::vector<std::int64_t> starts_;
};

// "lengths [64, 144, 256] x 4096 tokens": the budget's settings in a state, for the layout check.
std::string budget_text(const LoaderOptions& o);

}  // namespace clipper::data::detail
