#pragma once
// The loader's position as it travels in checkpoints (docs/data.md, "Save and resume"): the
// cursor of an epoch, its JSON form, and the checks a saved state passes before it is used. The
// re-split of a mid-epoch state onto another layout starts from these (loader.cpp).
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "clipper/data/loader.hpp"
#include "plan.hpp"

namespace clipper::data::detail {

constexpr int kStateVersion = 1;

// A layout that planned an epoch: ranks x workers and the samples per rank.
struct Layout {
  int world = 1, workers = 1;
  std::int64_t T = 0;
  std::string budget;  // token-budget batches: budget_text(); empty: batches of batch_size
  bool operator==(const Layout& o) const {
    return world == o.world && workers == o.workers && T == o.T && budget == o.budget;
  }
};

struct Cursor {
  std::int64_t epoch = 0, pos = 0, batch_index = 0;
  // Token-budget batches: the batch index at which this epoch's RankSchedule starts (0; in a
  // re-split epoch the index its rest started at, also the schedule's salt).
  std::int64_t sched0 = 0;
  std::int64_t len = 0;                  // samples this rank delivers this epoch
  std::vector<std::int64_t> next_raw;    // per worker: raw outputs of its piece's stream consumed
  std::vector<std::int64_t> next_piece;  // per worker: the piece of its last good sample
  // A re-split epoch (empty: this layout's own plan): per worker, its pieces of the streams that
  // `base` planned.
  std::vector<std::vector<Piece>> pieces;
  Layout base;
  BadDataCounters counters;
};

// One saved rank's state, parsed and checked in itself.
struct Saved {
  Layout layout;
  int rank = 0;
  Cursor c;
};

// What is left of worker w's part after `c`, as pieces: element i is the worker's piece
// next_piece[w] + i (one piece, its own stream, in an epoch of the layout's own plan).
std::vector<Piece> rest_of(const Cursor& c, int w, int rank, int workers);

// The samples of every worker's pieces together (the samples a re-split rank delivers), checked:
// a saved state may list 2^23 pieces of 2^40 samples. Throws core::InputError starting with
// `what`.
std::int64_t pieces_total(const std::vector<std::vector<Piece>>& pieces, const std::string& what);

// The "resplit" entry of a state: the base layout and every worker's pieces.
nlohmann::json pieces_json(const Cursor& c);

// One rank's state from a checkpoint, parsed and checked in itself (types, ranges, pieces);
// `what` starts every error message. Throws core::InputError.
Saved parse_saved(const nlohmann::json& j, const std::string& what);

// The bad-data counters of two ranks added kind by kind.
BadDataCounters counters_sum(const BadDataCounters& a, const BadDataCounters& b);

// A whole saved layout: every rank in order, one epoch, one base.
bool complete(const std::vector<Saved>& saved);

// "2 rank(s) x 3 workers (640 samples per rank)".
std::string layout_text(const Layout& l);

}  // namespace clipper::data::detail
