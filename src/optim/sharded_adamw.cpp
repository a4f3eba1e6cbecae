#include "clipper/optim/sharded_adamw.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <set>
#include <unordered_map>

#include "clipper/core/error.hpp"

namespace clipper::optim {
namespace {

constexpr const char* kFormat = "flat-shards-1";

at::ScalarType moment_dtype(at::ScalarType param) {
  return param == at::kDouble ? at::kDouble : at::kFloat;
}

std::string bucket_key(const char* what, std::size_t k) {
  return std::string(what) + "." + std::to_string(k);
}

nlohmann::json segments_json(const dist::FlatLayout& layout, std::size_t k, int rank,
                             const std::vector<std::string>& names) {
  nlohmann::json segs = nlohmann::json::array();
  for (const auto& g : layout.segments(k, rank))
    segs.push_back({names[g.param], g.param_offset, g.shard_offset, g.numel});
  return {{"shard_numel", layout.shard_numel(k)}, {"segments", segs}};
}

nlohmann::json header(const dist::FlatLayout& layout, int rank) {
  return {{"format", kFormat},
          {"world_size", layout.world_size},
          {"rank", rank},
          {"buckets", nlohmann::json::array()},
          {"steps", nlohmann::json::object()}};
}

// Where the saved elements of one parameter are.
struct Piece {
  int rank;
  std::size_t bucket;
  std::int64_t shard_offset, param_offset, numel;
};

// A destination: elements [offset, offset + numel) of parameter `name` (param_numel in all), one
// contiguous [numel] tensor per saved key.
struct Target {
  std::string name;
  std::int64_t param_numel, offset, numel;
  std::vector<at::Tensor> into;
};

// What the saved shards hold: the tensor keys ("<key>.<bucket>") and, for messages, what it is.
struct Saved {
  std::vector<std::string> keys;
  std::string what;
};
const Saved kMoments{{"exp_avg", "exp_avg_sq"}, "optimizer state"};

std::map<std::string, std::vector<Piece>> index_pieces(const SavedFlatShards& saved,
                                                       const Saved& kind,
                                                       std::map<std::string, double>& steps) {
  std::map<std::string, std::vector<Piece>> out;
  for (std::size_t r = 0; r < saved.json.size(); ++r) {
    const auto& j = saved.json[r];
    core::require(j.is_object() && j.value("format", "") == kFormat,
                  "checkpoint '" + saved.where + "': the " + kind.what + " of rank " +
                      std::to_string(r) + " is not in the " + kFormat +
                      " form (written by an older clipper?)");
    const auto& buckets = j.at("buckets");
    for (std::size_t k = 0; k < buckets.size(); ++k)
      for (const auto& s : buckets[k].at("segments"))
        out[s.at(0).get<std::string>()].push_back(
            {static_cast<int>(r), k, s.at(2).get<std::int64_t>(), s.at(1).get<std::int64_t>(),
             s.at(3).get<std::int64_t>()});
    if (j.contains("steps"))
      for (const auto& [name, v] : j.at("steps").items())
        steps[name] = std::max(steps[name], v.get<double>());
  }
  return out;
}

void check_pieces(const std::vector<Piece>* pieces, const Target& t, const std::string& where,
                  const Saved& kind) {
  if (!pieces)
    throw core::InputError("checkpoint '" + where + "': the " + kind.what + " has no entry for '" +
                           t.name + "'");
  std::int64_t saved = 0;
  for (const auto& p : *pieces) saved += p.numel;
  if (saved != t.param_numel)
    throw core::InputError("checkpoint '" + where + "': the " + kind.what + " of '" + t.name +
                           "' has " + std::to_string(saved) + " elements, expected " +
                           std::to_string(t.param_numel));
}

// Copies into every target the overlapping pieces, reading only the ranks that hold them.
std::map<std::string, double> fill_targets(const SavedFlatShards& saved, const Saved& kind,
                                           const std::vector<Target>& targets) {
  std::map<std::string, double> steps;
  const auto pieces = index_pieces(saved, kind, steps);
  auto overlap = [](const Piece& p, const Target& t) {
    return std::make_pair(std::max(p.param_offset, t.offset),
                          std::min(p.param_offset + p.numel, t.offset + t.numel));
  };
  std::set<int> needed;
  for (const auto& t : targets) {
    const auto it = pieces.find(t.name);
    check_pieces(it == pieces.end() ? nullptr : &it->second, t, saved.where, kind);
    for (const auto& p : it->second)
      if (overlap(p, t).second > overlap(p, t).first) needed.insert(p.rank);
  }
  std::map<int, std::unordered_map<std::string, at::Tensor>> files;
  for (int r : needed)
    for (auto& [n, tensor] : saved.tensors(r)) files[r][n] = tensor;
  auto shard = [&](const Piece& p, const std::string& key) {
    const auto it = files[p.rank].find(bucket_key(key.c_str(), p.bucket));
    if (it == files[p.rank].end())
      throw core::InputError("checkpoint '" + saved.where + "': rank " + std::to_string(p.rank) +
                             "'s " + kind.what + " has no tensor " +
                             bucket_key(key.c_str(), p.bucket));
    return it->second.reshape({-1});
  };
  for (const auto& t : targets)
    for (const auto& p : pieces.at(t.name)) {
      const auto [lo, hi] = overlap(p, t);
      if (hi <= lo) continue;
      const std::int64_t from = p.shard_offset + lo - p.param_offset, n = hi - lo;
      for (std::size_t i = 0; i < kind.keys.size(); ++i)
        t.into[i].narrow(0, lo - t.offset, n).copy_(shard(p, kind.keys[i]).narrow(0, from, n));
    }
  return steps;
}

// The targets of `rank`'s shards of every bucket of `layout`: per saved key, one list of shard
// tensors (one per bucket) to fill.
std::vector<Target> shard_targets(const dist::FlatLayout& layout, int rank,
                                  const std::vector<std::string>& names,
                                  const std::vector<std::vector<at::Tensor>>& shards) {
  std::vector<std::int64_t> numel(names.size(), 0);
  for (const auto& b : layout.buckets)
    for (std::size_t j = 0; j < b.params.size(); ++j)
      numel[b.params[j]] = (j + 1 < b.params.size() ? b.offsets[j + 1] : b.numel) - b.offsets[j];
  std::vector<Target> targets;
  for (std::size_t k = 0; k < layout.buckets.size(); ++k)
    for (const auto& g : layout.segments(k, rank)) {
      Target t{names[g.param], numel[g.param], g.param_offset, g.numel, {}};
      for (const auto& per_key : shards)
        t.into.push_back(per_key[k].narrow(0, g.shard_offset, g.numel));
      targets.push_back(std::move(t));
    }
  return targets;
}

std::unordered_map<std::string, at::Tensor> by_name(const NamedTensors& state) {
  std::unordered_map<std::string, at::Tensor> out;
  for (const auto& [n, t] : state) out[n] = t;
  return out;
}

}  // namespace

ShardedAdamW::ShardedAdamW(dist::FlatLayout layout, int rank, std::vector<std::string> names,
                           std::vector<ParamSetting> settings, AdamWOptions options)
    : layout_(std::move(layout)),
      rank_(rank),
      names_(std::move(names)),
      settings_(std::move(settings)),
      options_(options) {
  core::require(options_.fused, "dist.zero > 0 runs the fused AdamW; set optim.fused=true");
  for (std::size_t k = 0; k < layout_.buckets.size(); ++k) {
    const auto& b = layout_.buckets[k];
    core::require(b.dtype == at::kFloat || b.dtype == at::kDouble,
                  "dist.zero > 0 needs float32 (or float64) parameters, got " +
                      std::string(c10::toString(b.dtype)));
    const auto o = at::TensorOptions().dtype(moment_dtype(b.dtype)).device(b.device);
    exp_avg_.push_back(at::zeros({layout_.shard_numel(k)}, o));
    exp_avg_sq_.push_back(at::zeros({layout_.shard_numel(k)}, o));
  }
  const at::Device dev = layout_.buckets.empty() ? at::Device(at::kCPU) : layout_.buckets[0].device;
  step_ = at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(dev));
}

// The segments of equal (lr scale, weight decay) go to one fused call each; the step count is
// advanced once (the kernel only reads it), so a skipped step leaves it as it was.
void ShardedAdamW::step(double lr, std::vector<at::Tensor>& params,
                        const std::vector<at::Tensor>& grads, const at::Tensor& found_inf) {
  core::require(params.size() == exp_avg_.size() && grads.size() == exp_avg_.size(),
                "ShardedAdamW::step: one parameter and one gradient shard per bucket expected");
  at::NoGradGuard no_grad;
  struct Lists {
    std::vector<at::Tensor> p, g, m, v, s;
  };
  std::map<std::pair<double, double>, Lists> by_setting;
  for (std::size_t k = 0; k < params.size(); ++k)
    for (const auto& seg : layout_.segments(k, rank_)) {
      const auto& set = settings_[seg.param];
      auto& l = by_setting[{set.lr_scale, set.weight_decay}];
      l.p.push_back(params[k].narrow(0, seg.shard_offset, seg.numel));
      l.g.push_back(grads[k].narrow(0, seg.shard_offset, seg.numel));
      l.m.push_back(exp_avg_[k].narrow(0, seg.shard_offset, seg.numel));
      l.v.push_back(exp_avg_sq_[k].narrow(0, seg.shard_offset, seg.numel));
      l.s.push_back(step_);
    }
  if (found_inf.defined())
    step_.add_(1.0 - found_inf);
  else
    step_.add_(1);
  for (auto& [set, l] : by_setting)
    at::_fused_adamw_(l.p, l.g, l.m, l.v, /*max_exp_avg_sqs=*/{}, l.s, lr * set.first,
                      options_.beta1, options_.beta2, set.second, options_.eps, /*amsgrad=*/false,
                      /*maximize=*/false, /*grad_scale=*/std::nullopt,
                      found_inf.defined() ? std::optional<at::Tensor>(found_inf) : std::nullopt);
}

void ShardedAdamW::set_step_count(double step) {
  at::NoGradGuard no_grad;
  step_.fill_(step);
}

std::int64_t ShardedAdamW::state_bytes() const {
  std::int64_t n = static_cast<std::int64_t>(step_.nbytes());
  for (std::size_t k = 0; k < exp_avg_.size(); ++k)
    n += static_cast<std::int64_t>(exp_avg_[k].nbytes() + exp_avg_sq_[k].nbytes());
  return n;
}

FlatShards to_flat_shards(const AdamW& optimizer, const dist::FlatLayout& layout, int rank,
                          const std::vector<std::string>& names) {
  const auto state = by_name(optimizer.state());
  auto get = [&](const std::string& key) {
    const auto it = state.find(key);
    core::require(it != state.end(), "AdamW has no state '" + key + "'");
    return it->second;
  };
  FlatShards out;
  out.json = header(layout, rank);
  for (std::size_t k = 0; k < layout.buckets.size(); ++k) {
    const auto o = at::TensorOptions()
                       .dtype(moment_dtype(layout.buckets[k].dtype))
                       .device(layout.buckets[k].device);
    auto m = at::zeros({layout.shard_numel(k)}, o), v = at::zeros({layout.shard_numel(k)}, o);
    for (const auto& g : layout.segments(k, rank)) {
      const auto& n = names[g.param];
      m.narrow(0, g.shard_offset, g.numel)
          .copy_(get(n + ".exp_avg").reshape({-1}).narrow(0, g.param_offset, g.numel));
      v.narrow(0, g.shard_offset, g.numel)
          .copy_(get(n + ".exp_avg_sq").reshape({-1}).narrow(0, g.param_offset, g.numel));
      out.json["steps"][n] = get(n + ".step").item<double>();
    }
    out.tensors.emplace_back(bucket_key("exp_avg", k), m);
    out.tensors.emplace_back(bucket_key("exp_avg_sq", k), v);
    out.json["buckets"].push_back(segments_json(layout, k, rank, names));
  }
  return out;
}

FlatShards to_flat_shards(const ShardedAdamW& optimizer) {
  const auto& layout = optimizer.layout();
  FlatShards out;
  out.json = header(layout, optimizer.rank());
  const double step = optimizer.step_count().item<double>();
  for (std::size_t k = 0; k < layout.buckets.size(); ++k) {
    out.tensors.emplace_back(bucket_key("exp_avg", k), optimizer.exp_avg()[k]);
    out.tensors.emplace_back(bucket_key("exp_avg_sq", k), optimizer.exp_avg_sq()[k]);
    out.json["buckets"].push_back(segments_json(layout, k, optimizer.rank(), optimizer.names()));
    for (const auto& g : layout.segments(k, optimizer.rank()))
      out.json["steps"][optimizer.names()[g.param]] = step;
  }
  return out;
}

FlatShards whole_flat_shards(const std::vector<WholeMoments>& params) {
  FlatShards out;
  out.json = {{"format", kFormat},
              {"world_size", 1},
              {"rank", 0},
              {"buckets", nlohmann::json::array()},
              {"steps", nlohmann::json::object()}};
  for (std::size_t k = 0; k < params.size(); ++k) {
    const auto& p = params[k];
    const std::int64_t n = p.exp_avg.numel();
    core::require(p.exp_avg_sq.numel() == n,
                  "whole_flat_shards: the moments of '" + p.name + "' differ in size");
    out.tensors.emplace_back(bucket_key("exp_avg", k), p.exp_avg.reshape({-1}));
    out.tensors.emplace_back(bucket_key("exp_avg_sq", k), p.exp_avg_sq.reshape({-1}));
    out.json["buckets"].push_back(
        {{"shard_numel", n}, {"segments", nlohmann::json::array({{p.name, 0, 0, n}})}});
    out.json["steps"][p.name] = p.step;
  }
  return out;
}

void load_flat_shards(AdamW& optimizer, const SavedFlatShards& saved) {
  auto state = by_name(optimizer.state());
  std::vector<Target> targets;
  for (const auto& g : optimizer.groups())
    for (const auto& n : g.names) {
      const auto& m = state.at(n + ".exp_avg");
      targets.push_back(
          {n,
           m.numel(),
           0,
           m.numel(),
           {at::zeros({m.numel()}, m.options()), at::zeros({m.numel()}, m.options())}});
    }
  const auto steps = fill_targets(saved, kMoments, targets);
  at::NoGradGuard no_grad;
  for (const auto& t : targets) {
    auto& m = state.at(t.name + ".exp_avg");
    m.copy_(t.into[0].view(m.sizes()));
    state.at(t.name + ".exp_avg_sq").copy_(t.into[1].view(m.sizes()));
    const auto it = steps.find(t.name);
    state.at(t.name + ".step").fill_(it == steps.end() ? 0.0 : it->second);
  }
}

void load_flat_shards(ShardedAdamW& optimizer, const SavedFlatShards& saved) {
  const auto targets = shard_targets(optimizer.layout(), optimizer.rank(), optimizer.names(),
                                     {optimizer.exp_avg(), optimizer.exp_avg_sq()});
  const auto steps = fill_targets(saved, kMoments, targets);
  double step = 0;
  for (const auto& [n, s] : steps) step = std::max(step, s);
  optimizer.set_step_count(step);
}

FlatShards to_flat_shards(const dist::FlatLayout& layout, int rank,
                          const std::vector<std::string>& names,
                          const std::vector<at::Tensor>& shards, const std::string& key) {
  FlatShards out;
  out.json = header(layout, rank);
  out.json.erase("steps");
  for (std::size_t k = 0; k < layout.buckets.size(); ++k) {
    out.tensors.emplace_back(bucket_key(key.c_str(), k), shards[k]);
    out.json["buckets"].push_back(segments_json(layout, k, rank, names));
  }
  return out;
}

void load_whole_from_flat_shards(const SavedFlatShards& saved, const std::string& key,
                                 const std::vector<std::string>& names,
                                 const std::vector<at::Tensor>& whole) {
  std::vector<Target> targets;
  for (std::size_t i = 0; i < names.size(); ++i) {
    const std::int64_t n = whole[i].numel();
    targets.push_back({names[i], n, 0, n, {at::empty({n}, whole[i].options())}});
  }
  fill_targets(saved, {{key}, "shard set '" + key + "'"}, targets);
  at::NoGradGuard no_grad;
  for (std::size_t i = 0; i < names.size(); ++i)
    whole[i].copy_(targets[i].into[0].view(whole[i].sizes()));
}

void load_shards_from_flat_shards(const SavedFlatShards& saved, const std::string& key,
                                  const dist::FlatLayout& layout, int rank,
                                  const std::vector<std::string>& names,
                                  const std::vector<at::Tensor>& shards) {
  fill_targets(saved, {{key}, "shard set '" + key + "'"},
               shard_targets(layout, rank, names, {shards}));
}

SavedFlatShards whole_as_saved_flat_shards(const NamedTensors& whole, const std::string& key,
                                           const std::string& where) {
  nlohmann::json j = header({1, {}}, 0);
  j.erase("steps");
  NamedTensors tensors;
  for (std::size_t k = 0; k < whole.size(); ++k) {
    const auto& [name, t] = whole[k];
    const std::int64_t n = t.numel();
    tensors.emplace_back(bucket_key(key.c_str(), k), t.reshape({-1}));
    j["buckets"].push_back(
        {{"shard_numel", n}, {"segments", nlohmann::json::array({{name, 0, 0, n}})}});
  }
  SavedFlatShards saved;
  saved.json.push_back(std::move(j));
  saved.tensors = [tensors](int) { return tensors; };
  saved.where = where;
  return saved;
}

}  // namespace clipper::optim
