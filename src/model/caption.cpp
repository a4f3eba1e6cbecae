#include "clipper/model/caption.hpp"

#include <algorithm>
#include <limits>
#include <vector>

#include "clipper/core/error.hpp"

namespace clipper::model {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Restores the model's training mode when it goes out of scope.
class EvalScope {
 public:
  explicit EvalScope(ClipImpl& m) : m_(m), was_training_(m.is_training()) { m_.eval(); }
  ~EvalScope() { m_.train(was_training_); }
  EvalScope(const EvalScope&) = delete;
  EvalScope& operator=(const EvalScope&) = delete;

 private:
  ClipImpl& m_;
  bool was_training_;
};

// transformers' MinLengthLogitsProcessor then RepetitionPenaltyLogitsProcessor, in that order.
at::Tensor process_logits(const at::Tensor& ids, const at::Tensor& logits,
                          const CaptionOptions& o) {
  auto scores = logits.clone();
  if (ids.size(1) < o.min_seq_len) scores.select(1, o.eos_id).fill_(-kInf);
  auto picked = scores.gather(1, ids);
  picked = at::where(picked < 0, picked * o.repetition_penalty, picked / o.repetition_penalty);
  return scores.scatter(1, ids, picked);
}

// transformers' TopKLogitsWarper / TopPLogitsWarper (min_tokens_to_keep 1).
at::Tensor warp(const at::Tensor& scores, const CaptionOptions& o) {
  if (o.method == CaptionMethod::top_k) {
    const auto k = std::min<std::int64_t>(std::max<std::int64_t>(o.top_k, 1), scores.size(-1));
    const auto kth = std::get<0>(scores.topk(k, -1)).narrow(-1, k - 1, 1);
    return scores.masked_fill(scores < kth, -kInf);
  }
  const auto [sorted, order] = scores.sort(-1, /*descending=*/false);
  auto remove = sorted.softmax(-1).cumsum(-1) <= (1.0 - o.top_p);
  remove.narrow(-1, remove.size(-1) - 1, 1).fill_(false);
  return scores.masked_fill(remove.scatter(1, order, remove), -kInf);
}

at::Tensor generate_sampled(ClipImpl& model, const at::Tensor& images, const CaptionOptions& o) {
  const auto b = images.size(0);
  const auto opts = at::TensorOptions().dtype(at::kLong).device(images.device());
  const auto image_tokens = model.encode_image_tokens(images).second;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  at::Tensor out = at::full({b, 1}, o.sot_id, opts);
  while (true) {
    const auto l = out.size(1);
    const auto x =
        out.narrow(1, std::max<std::int64_t>(0, l - o.max_seq_len), std::min(l, o.max_seq_len));
    const auto done =
        out.select(1, l - 1).eq(o.eos_id).logical_or(out.select(1, l - 1).eq(o.pad_id));
    auto sample = at::full({b, 1}, o.pad_id, opts);
    if (done.all().item<bool>()) {
      if (!o.fixed_output_length) break;
    } else {
      const auto live = done.logical_not().nonzero().squeeze(1);
      const auto xl = x.index_select(0, live);
      const auto logits =
          model.caption_logits(image_tokens.index_select(0, live), xl).select(1, -1);
      auto scores = warp(process_logits(xl, logits.to(at::kFloat), o), o);
      at::Tensor picked;
      if (x.size(1) + 1 == o.seq_len) {
        picked = at::full({live.size(0), 1}, o.eos_id, opts);
      } else {
        const auto probs = (scores / o.temperature).softmax(-1).to(at::kCPU);
        picked = at::multinomial(probs, 1, false, gen).to(images.device());
      }
      sample.index_copy_(0, live, picked);
    }
    out = at::cat({out, sample}, 1);
    if (out.size(1) >= o.seq_len) break;
  }
  return out;
}

// transformers' BeamHypotheses (length_penalty 1, early_stopping false): the best `size`
// finished hypotheses of one (image, group), ranked by score / generated length.
struct Hypotheses {
  struct Entry {
    double score;
    at::Tensor tokens;
  };
  std::int64_t size;
  std::vector<Entry> beams;
  double worst = 1e9;

  void add(const at::Tensor& tokens, double sum_logits, std::int64_t length) {
    const double score = sum_logits / static_cast<double>(length);
    if (static_cast<std::int64_t>(beams.size()) >= size && score <= worst) return;
    beams.push_back({score, tokens});
    if (static_cast<std::int64_t>(beams.size()) > size) {
      // Python's sorted((score, index)): the lowest score, the earliest on ties, goes.
      std::vector<std::pair<double, std::size_t>> order;
      for (std::size_t i = 0; i < beams.size(); ++i) order.emplace_back(beams[i].score, i);
      std::sort(order.begin(), order.end());
      beams.erase(beams.begin() + static_cast<std::ptrdiff_t>(order[0].second));
      worst = order[1].first;
    } else {
      worst = std::min(score, worst);
    }
  }
  bool is_done(double best_sum_logits, std::int64_t cur_len) const {
    if (static_cast<std::int64_t>(beams.size()) < size) return false;
    return worst >= best_sum_logits / static_cast<double>(cur_len);
  }
};

struct BeamState {
  std::int64_t batch, beams, groups, group_size;
  std::vector<Hypotheses> hyps;  // [batch * groups]
  std::vector<bool> done;
  bool all_done() const {
    return std::all_of(done.begin(), done.end(), [](bool d) { return d; });
  }
};

// One group's step of transformers' BeamSearchScorer.process. `ids` are the group's rows
// [batch * group_size, L]; returns (scores, tokens, source rows) for its next beams.
std::tuple<at::Tensor, at::Tensor, at::Tensor> beam_process(
    BeamState& s, std::int64_t g, const at::Tensor& ids, const at::Tensor& scores,
    const at::Tensor& tokens, const at::Tensor& sources, const CaptionOptions& o) {
  const auto gs = s.group_size;
  const auto cur_len = ids.size(1) + 1;
  auto next_scores = at::zeros({s.batch, gs}, scores.options());
  auto next_tokens = at::zeros({s.batch, gs}, tokens.options());
  auto next_sources = at::zeros({s.batch, gs}, tokens.options());
  const auto sc = scores.to(at::kCPU), tk = tokens.to(at::kCPU), src = sources.to(at::kCPU);
  for (std::int64_t b = 0; b < s.batch; ++b) {
    const auto h = b * s.groups + g;
    if (s.done[h]) {
      next_tokens[b].fill_(o.pad_id);
      continue;
    }
    std::int64_t filled = 0;
    for (std::int64_t rank = 0; rank < sc.size(1) && filled < gs; ++rank) {
      const auto token = tk[b][rank].item<std::int64_t>();
      const auto row = b * gs + src[b][rank].item<std::int64_t>();
      const float score = sc[b][rank].item<float>();
      if (token == o.eos_id) {
        if (rank >= gs) continue;
        s.hyps[h].add(ids[row].clone(), score, cur_len);
      } else {
        next_scores[b][filled] = score;
        next_tokens[b][filled] = token;
        next_sources[b][filled] = row;
        ++filled;
      }
    }
    if (filled < gs)
      throw core::Error("beam search: fewer non-final candidates than beams (eos among them)");
    s.done[h] = s.done[h] || s.hyps[h].is_done(sc[b].max().item<float>(), cur_len);
  }
  return {next_scores.view(-1), next_tokens.view(-1), next_sources.view(-1)};
}

// transformers' BeamSearchScorer.finalize with one hypothesis kept per image.
at::Tensor beam_finalize(BeamState& s, const at::Tensor& ids, const at::Tensor& beam_scores,
                         const CaptionOptions& o) {
  const auto ids_cpu = ids.to(at::kCPU);
  const auto scores_cpu = beam_scores.to(at::kCPU);
  for (std::int64_t h = 0; h < s.batch * s.groups; ++h) {
    if (s.done[h]) continue;
    for (std::int64_t k = 0; k < s.group_size; ++k) {
      const auto row = h * s.group_size + k;
      s.hyps[h].add(ids_cpu[row], scores_cpu[row].item<float>(), ids_cpu.size(1));
    }
  }
  std::vector<at::Tensor> best;
  std::int64_t longest = 0, shortest = std::numeric_limits<std::int64_t>::max();
  for (std::int64_t b = 0; b < s.batch; ++b) {
    // Python's sorted(...).pop(): the highest score, the last one on ties.
    const Hypotheses::Entry* top = nullptr;
    for (std::int64_t g = 0; g < s.groups; ++g)
      for (const auto& e : s.hyps[b * s.groups + g].beams)
        if (!top || e.score >= top->score) top = &e;
    best.push_back(top->tokens);
    longest = std::max(longest, top->tokens.size(0));
    shortest = std::min(shortest, top->tokens.size(0));
  }
  const auto width = std::min(longest + 1, o.seq_len);
  auto out = at::zeros({s.batch, width}, at::kLong);
  if (shortest != longest) out.fill_(o.pad_id);
  for (std::int64_t b = 0; b < s.batch; ++b) {
    const auto n = best[b].size(0);
    out[b].narrow(0, 0, n).copy_(best[b]);
    if (n < width) out[b][n] = o.eos_id;
  }
  return out.to(ids.device());
}

at::Tensor generate_beams(ClipImpl& model, const at::Tensor& images_in, const CaptionOptions& o) {
  const auto b = images_in.size(0), nb = o.num_beams, groups = o.num_beam_groups, gs = nb / groups;
  const auto images = images_in.repeat_interleave(nb, 0);
  const auto image_tokens = model.encode_image_tokens(images).second;
  const auto opts = at::TensorOptions().dtype(at::kLong).device(images.device());
  auto ids = at::full({b * nb, 1}, o.sot_id, opts);
  auto beam_scores = at::full({b, nb}, -1e9, images.options().dtype(at::kFloat));
  beam_scores.slice(1, 0, nb, gs).fill_(0.0);
  beam_scores = beam_scores.view({-1});
  BeamState s{b,
              nb,
              groups,
              gs,
              std::vector<Hypotheses>(b * groups, Hypotheses{gs, {}, 1e9}),
              std::vector<bool>(b * groups, false)};
  at::Tensor last_tokens, last_sources;
  while (true) {
    auto current = at::zeros({b * nb}, opts);
    const auto logits = model.caption_logits(image_tokens, ids).select(1, -1).to(at::kFloat);
    const auto vocab = logits.size(-1);
    for (std::int64_t g = 0; g < groups; ++g) {
      std::vector<std::int64_t> rows;
      for (std::int64_t i = 0; i < b; ++i)
        for (std::int64_t k = 0; k < gs; ++k) rows.push_back(i * nb + g * gs + k);
      const auto idx = at::tensor(rows, opts);
      auto group_ids = ids.index_select(0, idx);
      const auto processed = process_logits(group_ids, logits.index_select(0, idx), o);
      auto scores =
          (processed + beam_scores.index_select(0, idx).unsqueeze(-1)).view({b, gs * vocab});
      auto [top, flat] = scores.topk(2 * gs, 1, true, true);
      const auto sources = flat.div(vocab, "floor");
      const auto tokens = flat.remainder(vocab);
      auto [next_scores, next_tokens, next_sources] =
          beam_process(s, g, group_ids, top, tokens, sources, o);
      beam_scores.index_copy_(0, idx, next_scores.to(beam_scores.device()));
      const auto src = next_sources.to(images.device());
      ids.index_copy_(0, idx, group_ids.index_select(0, src));
      group_ids = at::cat(
          {group_ids.index_select(0, src), next_tokens.to(images.device()).unsqueeze(-1)}, -1);
      current.index_copy_(0, idx, group_ids.select(1, -1));
      last_tokens = tokens;
      last_sources = sources;
    }
    ids = at::cat({ids, current.unsqueeze(-1)}, -1);
    if (s.all_done() || ids.size(1) >= o.seq_len) break;
  }
  auto out = beam_finalize(s, ids, beam_scores, o);
  if (o.fixed_output_length && out.size(1) < o.seq_len)
    out = at::cat({out, at::full({b, o.seq_len - out.size(1)}, o.pad_id, opts)}, 1);
  return out;
}

}  // namespace

std::optional<CaptionMethod> parse_caption_method(const std::string& word) {
  for (auto m : {CaptionMethod::beam_search, CaptionMethod::top_k, CaptionMethod::top_p})
    if (word == name_of(m)) return m;
  return std::nullopt;
}

const char* name_of(CaptionMethod m) {
  switch (m) {
    case CaptionMethod::top_k:
      return "top_k";
    case CaptionMethod::top_p:
      return "top_p";
    default:
      return "beam_search";
  }
}

void CaptionOptions::validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw core::InputError("caption: " + what);
  };
  need(seq_len > min_seq_len, "seq_len (" + std::to_string(seq_len) +
                                  ") must be larger than min_seq_len (" +
                                  std::to_string(min_seq_len) + ")");
  need(max_seq_len > 0, "max_seq_len must be positive");
  need(temperature > 0.0, "temperature must be positive");
  need(top_k >= 1, "top_k must be at least 1");
  need(top_p > 0.0 && top_p <= 1.0, "top_p must be in (0, 1]");
  need(repetition_penalty > 0.0, "repetition_penalty must be positive");
  if (method == CaptionMethod::beam_search)
    need(num_beams > 1 && num_beam_groups >= 1 && num_beam_groups <= num_beams &&
             num_beams % num_beam_groups == 0,
         "num_beams must be > 1 and divisible by num_beam_groups (" + std::to_string(num_beams) +
             ", " + std::to_string(num_beam_groups) + ")");
}

at::Tensor generate_captions(ClipImpl& model, const at::Tensor& images, const CaptionOptions& o) {
  o.validate();
  if (!model.is_coca())
    throw core::InputError("model '" + model.spec().name +
                           "' cannot caption: it is not a CoCa model (no multimodal_cfg)");
  if (o.seq_len > model.spec().context_length + 1 && o.method == CaptionMethod::beam_search)
    throw core::InputError("caption: seq_len " + std::to_string(o.seq_len) +
                           " exceeds the text tower's context_length + 1");
  at::NoGradGuard no_grad;
  EvalScope eval(model);
  return o.method == CaptionMethod::beam_search ? generate_beams(model, images, o)
                                                : generate_sampled(model, images, o);
}

}  // namespace clipper::model
