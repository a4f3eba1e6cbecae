#pragma once
// A sample's regions for SigLIP 2's LocCa tasks (referring expressions and grounded captions),
// read from the sample's `json` member (docs/data.md, "Regions"):
//   {"regions": [{"box": [x0, y0, x1, y1], "phrase": "a red car"}, ...], ...}
// box: the region's corners as fractions of the image's width (x) and height (y), 0 <= x0 <=
// x1 <= 1, 0 <= y0 <= y1 <= 1, in the image as stored (before any crop or resize); phrase: a
// non-empty string. Other keys of the json (a caption under data.text_key = json:...) are left
// alone. No `json` member, or one without "regions" or with an empty list: the sample has no
// regions (the trainer skips the region tasks for it and counts it).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace clipper::tokenizer {
class Tokenizer;
}

namespace clipper::data {

struct Region {
  double x0, y0, x1, y1;
  std::string phrase;
};

// The regions of one sample's json text; `sample` names the sample in errors. A json that does
// not parse, a "regions" that is not a list, an entry without a 4-number box inside [0, 1] with
// x0 <= x1 and y0 <= y1, or without a non-empty string phrase: InputError naming the sample,
// the entry's index and what was expected.
std::vector<Region> parse_regions(const std::string& json_text, const std::string& sample);

// The regions as seen in a crop (x, y, w, h in the source's pixels) of a width x height
// picture: each box moved into the crop's fractions and clipped to it; a region that keeps less
// than `min_visible` of its area (or none: a box of zero area is kept only when its clipped
// corners stay inside) is dropped, since its phrase may no longer describe what shows.
std::vector<Region> crop_regions(const std::vector<Region>& regions, int width, int height,
                                 int crop_x, int crop_y, int crop_w, int crop_h,
                                 double min_visible = 0.5);

// LocCa's box tokens: a box's corners (fractions in [0, 1]) -> 4 integers in [0, bins),
// round(v * (bins - 1)), clamped to the range. InputError when bins < 2, a value is not finite,
// x0 > x1 or y0 > y1.
struct QuantizedBox {
  std::int64_t x0, y0, x1, y1;
};
QuantizedBox quantize_box(double x0, double y0, double x1, double y1, std::int64_t bins);
// The box as the decoder reads and writes it: the 4 integers as text, "x0 y0 x1 y1", through the
// model's own tokenizer (no extra vocabulary; LocCa writes coordinates as text as well).
std::string box_text(const QuantizedBox& box);

// A decoder sequence of a region task: the tokenizer's ids of "PREFIX TARGET" (its start and
// end ids and padding, context_length ids) and where the target's first id sits.
struct TaskSequence {
  std::vector<std::int64_t> tokens;
  std::int64_t target_start = 0;
};
enum class RegionTask { aref, gcap };
// aref (referring expression -> box): prefix "aref: PHRASE :", target the box text;
// gcap (box -> grounded caption): prefix "gcap: BOX :", target the phrase. The prefix's ids
// must be the leading ids of the whole text's (true of word-level tokenizers at a space; an
// InputError naming the tokenizer's split otherwise). A prefix that fills the context leaves no
// target: target_start == context_length (the caller skips the task for that sample).
TaskSequence region_task_sequence(const tokenizer::Tokenizer& tok, RegionTask task,
                                  const Region& region, std::int64_t bins);

// The region sequences of one batch: per sample with regions, one region picked by a hash of
// (seed, step, row) (the same on every rank and after a resume) gives its ARef and GCap
// sequences. A sample without regions, or whose ARef or GCap target finds no room in the context,
// has no rows here and is counted.
struct RegionBatch {
  at::Tensor rows;                     // int64 [R]: each sequence's sample in the batch
  at::Tensor aref_tokens, aref_start;  // int64 [R, L], [R]
  at::Tensor gcap_tokens, gcap_start;  // int64 [R, L], [R]
  std::int64_t without_regions = 0;    // samples with no regions
  std::int64_t no_room = 0;            // samples whose picked region left no target in the context
  bool empty() const { return !rows.defined() || rows.numel() == 0; }
};
RegionBatch make_region_batch(const std::vector<std::vector<Region>>& samples,
                              const tokenizer::Tokenizer& tok, std::int64_t bins,
                              std::uint64_t seed, std::int64_t step);

}  // namespace clipper::data
