#include "loader_state.hpp"

#include "clipper/core/error.hpp"

namespace clipper::data::detail {
namespace {

// The state comes from a checkpoint file: a float where an integer belongs would convert with
// undefined behaviour, and a deep value must not reach a recursive dump in a message.
void check_state_types(const nlohmann::json& j, const std::string& what) {
  core::require(j.is_object(), what + "is not a JSON object");
  for (const char* k : {"version", "seed", "rank", "world_size", "workers", "shards",
                        "samples_per_epoch", "epoch", "position", "batch_index", "budget_origin"})
    core::require(!j.contains(k) || j[k].is_number_integer(),
                  what + "field '" + k + "' is not an integer");
  for (const char* k : {"next_raw", "next_piece", "counters"}) {
    if (!j.contains(k)) continue;
    core::require(j[k].is_array() || j[k].is_object(), what + "field '" + k + "' is malformed");
    for (const auto& v : j[k])
      core::require(v.is_number_integer(), what + "field '" + k + "' holds a non-integer");
  }
}

void read_pieces(const nlohmann::json& r, Saved& s, const std::string& what) {
  const std::string bad = what + "field 'resplit' is malformed";
  core::require(r.is_object(), bad);
  for (const char* k : {"world_size", "workers", "samples_per_epoch"})
    core::require(r.contains(k) && r[k].is_number_integer() && r[k].get<std::int64_t>() >= 1 &&
                      r[k].get<std::int64_t>() <= (std::int64_t{1} << 40),
                  bad);
  s.c.base = {r["world_size"].get<int>(), r["workers"].get<int>(),
              r["samples_per_epoch"].get<std::int64_t>()};
  const auto& per_worker = r.at("pieces");
  core::require(per_worker.is_array() && per_worker.size() == s.c.next_raw.size(), bad);
  for (const auto& ps : per_worker) {
    core::require(ps.is_array(), bad);
    auto& out = s.c.pieces.emplace_back();
    for (const auto& p : ps) {
      core::require(p.is_array() && p.size() == 6, bad);
      for (const auto& v : p)
        core::require(v.is_number_integer() && v.get<std::int64_t>() >= 0, bad);
      const auto at = [&](std::size_t i) { return p[i].get<std::int64_t>(); };
      core::require(at(0) < s.c.base.world && at(1) < s.c.base.workers && at(4) <= s.c.base.T &&
                        at(2) < (std::int64_t{1} << 50) && at(3) <= s.c.base.T,
                    bad);
      out.push_back(
          {static_cast<int>(at(0)), static_cast<int>(at(1)), at(2), at(3), at(4), at(5) != 0});
    }
  }
}

// Every piece list matches the collator's rule (worker w delivers worker_quota(len, K, w)) and the
// position lies inside the current piece, so no worker can stop short and hang the collator.
void check_pieces(const Saved& s, const std::string& what) {
  const auto& c = s.c;
  const int K = s.layout.workers;
  core::require(c.pieces.empty() || c.next_piece.size() == c.pieces.size(),
                what + "has no next_piece for each worker");
  const std::int64_t len = pieces_total(c.pieces, what);  // every sum below is at most this
  for (int w = 0; w < K && !c.pieces.empty(); ++w) {
    const auto& ps = c.pieces[static_cast<std::size_t>(w)];
    std::int64_t sum = 0, before = 0;
    const std::int64_t i = c.next_piece[static_cast<std::size_t>(w)];
    for (std::size_t j = 0; j < ps.size(); ++j) {
      if (static_cast<std::int64_t>(j) < i) before += ps[j].count;
      sum += ps[j].count;
    }
    const std::int64_t done = worker_quota(c.pos, K, w);
    core::require(sum == worker_quota(len, K, w) && i >= 0 &&
                      (ps.empty() ? i == 0 : i < static_cast<std::int64_t>(ps.size())) &&
                      done >= before && (ps.empty() || done <= before + ps[i].count),
                  what + "is inconsistent (worker " + std::to_string(w) + "'s pieces)");
  }
}

}  // namespace

std::int64_t pieces_total(const std::vector<std::vector<Piece>>& pieces, const std::string& what) {
  std::int64_t total = 0;
  for (const auto& ps : pieces)
    for (const auto& p : ps)
      core::require(p.count >= 0 && !__builtin_add_overflow(total, p.count, &total),
                    what + "field 'resplit' holds more samples than a 64-bit count");
  return total;
}

std::vector<Piece> rest_of(const Cursor& c, int w, int rank, int workers) {
  const auto W = static_cast<std::size_t>(w);
  const std::int64_t done = worker_quota(c.pos, workers, w);
  if (c.pieces.empty())
    return {Piece{rank, w, c.next_raw[W], 0, worker_quota(c.len, workers, w) - done, false}};
  const auto& ps = c.pieces[W];
  const auto i = static_cast<std::size_t>(c.next_piece[W]);
  std::int64_t before = 0;
  for (std::size_t j = 0; j < i; ++j) before += ps[j].count;
  std::vector<Piece> out(ps.begin() + static_cast<std::ptrdiff_t>(i), ps.end());
  if (!out.empty() && done > before) {  // inside piece i: on from the raw position, nothing to skip
    out[0].raw = c.next_raw[W];
    out[0].skip = 0;
    out[0].count -= done - before;
  }
  return out;
}

nlohmann::json pieces_json(const Cursor& c) {
  nlohmann::json per_worker = nlohmann::json::array();
  for (const auto& ps : c.pieces) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& p : ps)
      a.push_back({p.rank, p.worker, p.raw, p.skip, p.count, p.repeated ? 1 : 0});
    per_worker.push_back(std::move(a));
  }
  return {{"world_size", c.base.world},
          {"workers", c.base.workers},
          {"samples_per_epoch", c.base.T},
          {"pieces", std::move(per_worker)}};
}

Saved parse_saved(const nlohmann::json& j, const std::string& what) {
  check_state_types(j, what);
  core::require(j.value("version", 0) == kStateVersion,
                what + "has no version " + std::to_string(kStateVersion));
  Saved s;
  s.layout = {j.at("world_size").get<int>(), j.at("workers").get<int>(),
              j.at("samples_per_epoch").get<std::int64_t>()};
  s.rank = j.at("rank").get<int>();
  if (j.contains("token_budget")) {
    core::require(j["token_budget"].is_string(), what + "field 'token_budget' is not a string");
    s.layout.budget = j["token_budget"].get<std::string>();
  }
  auto& c = s.c;
  c.sched0 = j.value("budget_origin", std::int64_t{0});
  c.epoch = j.at("epoch").get<std::int64_t>();
  c.pos = j.at("position").get<std::int64_t>();
  c.batch_index = j.at("batch_index").get<std::int64_t>();
  c.next_raw = j.at("next_raw").get<std::vector<std::int64_t>>();
  c.next_piece = j.value("next_piece", std::vector<std::int64_t>(c.next_raw.size(), 0));
  c.counters = BadDataCounters::from_json(j.at("counters"));
  c.base = s.layout;
  const auto& L = s.layout;
  core::require(L.world >= 1 && L.workers >= 1 && L.T >= 1 && s.rank >= 0 && s.rank < L.world &&
                    static_cast<int>(c.next_raw.size()) == L.workers && c.epoch >= 0 &&
                    c.batch_index >= 0 && c.sched0 >= 0 && c.sched0 <= c.batch_index,
                what + "is inconsistent");
  if (j.contains("resplit")) read_pieces(j["resplit"], s, what);
  c.len = L.T;
  if (!c.pieces.empty()) c.len = pieces_total(c.pieces, what);
  core::require(c.pos >= 0 && c.pos <= c.len, what + "is inconsistent (position)");
  check_pieces(s, what);
  return s;
}

BadDataCounters counters_sum(const BadDataCounters& a, const BadDataCounters& b) {
  nlohmann::json j = a.to_json();
  const nlohmann::json add = b.to_json();
  for (const auto& [k, v] : add.items()) j[k] = j.value(k, std::int64_t{0}) + v.get<std::int64_t>();
  return BadDataCounters::from_json(j);
}

bool complete(const std::vector<Saved>& saved) {
  const Saved& a = saved.front();
  if (static_cast<int>(saved.size()) != a.layout.world) return false;
  for (std::size_t r = 0; r < saved.size(); ++r) {
    const Saved& s = saved[r];
    if (s.rank != static_cast<int>(r) || !(s.layout == a.layout) || s.c.epoch != a.c.epoch ||
        !(s.c.base == a.c.base) || s.c.pieces.empty() != a.c.pieces.empty())
      return false;
  }
  return true;
}

std::string layout_text(const Layout& l) {
  return std::to_string(l.world) + " rank(s) x " + std::to_string(l.workers) + " workers (" +
         std::to_string(l.T) + " samples per rank" +
         (l.budget.empty() ? "" : ", token-budget batches of " + l.budget) + ")";
}

}  // namespace clipper::data::detail
