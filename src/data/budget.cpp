#include "budget.hpp"

#include <algorithm>

#include "clipper/core/error.hpp"
#include "rng.hpp"

namespace clipper::data::detail {

void check_token_budget(const LoaderOptions& o) {
  if (!o.token_budget()) return;
  core::require(o.naflex_patch > 0 && o.naflex_max_tokens > 0,
                "data.naflex_seq_lens is set but the model takes square pictures: token-budget "
                "batches need a NaFlex model (preprocess_cfg.max_seq_len > 0 with vision_cfg.tower "
                "naflex_vit); leave data.naflex_seq_lens empty");
  std::int64_t longest = 0;
  for (const std::int64_t L : o.naflex_seq_lens) {
    core::require(L >= 1 && L <= (std::int64_t{1} << 20),
                  "data.naflex_seq_lens holds " + std::to_string(L) +
                      "; expected sequence lengths (patches per picture) from 1 to 1048576");
    longest = std::max(longest, L);
  }
  core::require(o.naflex_max_tokens_per_batch >= longest &&
                    o.naflex_max_tokens_per_batch <= (std::int64_t{1} << 40),
                "data.naflex_max_tokens_per_batch is " +
                    std::to_string(o.naflex_max_tokens_per_batch) +
                    "; expected at least the longest of data.naflex_seq_lens (" +
                    std::to_string(longest) + ") so that every batch holds a picture");
}

std::vector<BudgetBatch> budget_batches(const LoaderOptions& o, std::uint64_t salt,
                                        std::int64_t avail) {
  std::vector<BudgetBatch> out;
  const auto& lens = o.naflex_seq_lens;
  Rng rng(mix_seed(o.seed, 0x544f4b454e53ULL, salt));
  for (std::int64_t left = avail; left > 0;) {
    const std::int64_t L = lens[rng.below(lens.size())];
    const std::int64_t full = o.naflex_max_tokens_per_batch / L;
    if (full < 1) {  // never loops on empty batches
      check_token_budget(o);
      throw core::InputError("data.naflex_max_tokens_per_batch holds no picture of length " +
                             std::to_string(L));
    }
    if (o.drop_last && full > left) break;
    out.push_back({L, std::min(full, left)});
    left -= out.back().count;
  }
  return out;
}

std::int64_t budget_rank_samples(const LoaderOptions& o, std::uint64_t salt, std::int64_t avail) {
  if (!o.drop_last) return avail;
  std::int64_t total = 0;
  for (const auto& b : budget_batches(o, salt, avail)) total += b.count;
  return total;
}

RankSchedule::RankSchedule(const LoaderOptions& o, std::int64_t epoch, std::uint64_t salt,
                           std::int64_t rank_total) {
  const auto canonical = budget_batches(o, salt, rank_total);
  const std::size_t S = canonical.size();
  std::vector<std::size_t> perm(S);
  for (std::size_t i = 0; i < S; ++i) perm[i] = i;
  Rng rng(mix_seed(o.seed, 0x4f52444552ULL, epoch, salt));  // Fisher-Yates
  for (std::size_t i = S; i > 1; --i) std::swap(perm[i - 1], perm[rng.below(i)]);
  batches_.reserve(S);
  starts_.assign(1, 0);
  for (std::size_t k = 0; k < S; ++k) {
    batches_.push_back(canonical[perm[(k + static_cast<std::size_t>(o.rank)) % S]]);
    starts_.push_back(starts_.back() + batches_.back().count);
  }
}

std::int64_t RankSchedule::seq_len_at(std::int64_t position) const {
  if (batches_.empty()) return 0;
  const auto it = std::upper_bound(starts_.begin(), starts_.end(), position);
  const auto k = static_cast<std::size_t>(std::max<std::ptrdiff_t>(1, it - starts_.begin()) - 1);
  return batches_[std::min(k, batches_.size() - 1)].seq_len;
}

std::string budget_text(const LoaderOptions& o) {
  if (!o.token_budget()) return "";
  std::string s = "lengths [";
  for (std::size_t i = 0; i < o.naflex_seq_lens.size(); ++i)
    s += (i ? ", " : "") + std::to_string(o.naflex_seq_lens[i]);
  return s + "] x " + std::to_string(o.naflex_max_tokens_per_batch) + " tokens";
}

}  // namespace clipper::data::detail
