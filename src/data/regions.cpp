#include "clipper/data/regions.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "clipper/core/error.hpp"
#include "clipper/tokenizer/tokenizer.hpp"

namespace clipper::data {

namespace {

Region parse_region(const nlohmann::json& e, const std::string& where) {
  core::require(e.is_object(), where + ": expected an object {\"box\": [x0, y0, x1, y1], " +
                                   "\"phrase\": \"...\"}, got " + e.dump());
  core::require(e.contains("box") && e["box"].is_array() && e["box"].size() == 4,
                where + ": \"box\" must be a list of 4 numbers [x0, y0, x1, y1]");
  double v[4];
  for (int i = 0; i < 4; ++i) {
    const auto& x = e["box"][static_cast<std::size_t>(i)];
    core::require(x.is_number() && std::isfinite(x.get<double>()) && x.get<double>() >= 0.0 &&
                      x.get<double>() <= 1.0,
                  where + ": box values must be numbers in [0, 1] (fractions of the image's " +
                      "width and height), got " + e["box"].dump());
    v[i] = x.get<double>();
  }
  core::require(v[0] <= v[2] && v[1] <= v[3],
                where + ": box must have x0 <= x1 and y0 <= y1, got " + e["box"].dump());
  core::require(
      e.contains("phrase") && e["phrase"].is_string() && !e["phrase"].get<std::string>().empty(),
      where + ": \"phrase\" must be a non-empty string");
  return {v[0], v[1], v[2], v[3], e["phrase"].get<std::string>()};
}

std::vector<std::int64_t> encode(const tokenizer::Tokenizer& tok, const std::string& text) {
  std::vector<std::int64_t> ids(static_cast<std::size_t>(tok.context_length()));
  tok.encode(text, ids.data());
  return ids;
}

// Where the text of `ids` ends: the first position at or after `lead` holding `end` (the id the
// empty text's encoding has right after its leading ids), else the context length.
std::int64_t content_end(const std::vector<std::int64_t>& ids, std::size_t lead, std::int64_t end) {
  for (std::size_t i = lead; i < ids.size(); ++i)
    if (ids[i] == end) return static_cast<std::int64_t>(i);
  return static_cast<std::int64_t>(ids.size());
}

}  // namespace

std::vector<Region> crop_regions(const std::vector<Region>& regions, int width, int height,
                                 int crop_x, int crop_y, int crop_w, int crop_h,
                                 double min_visible) {
  std::vector<Region> out;
  if (crop_w <= 0 || crop_h <= 0) return out;
  const double w = width, h = height;
  auto fx = [&](double x) { return std::clamp((x * w - crop_x) / crop_w, 0.0, 1.0); };
  auto fy = [&](double y) { return std::clamp((y * h - crop_y) / crop_h, 0.0, 1.0); };
  for (const auto& r : regions) {
    Region c{fx(r.x0), fy(r.y0), fx(r.x1), fy(r.y1), r.phrase};
    // Areas in source pixels: the box's and the part of it inside the crop.
    const double area = (r.x1 - r.x0) * w * (r.y1 - r.y0) * h;
    const double kept = (c.x1 - c.x0) * crop_w * (c.y1 - c.y0) * crop_h;
    if (area > 0 ? kept >= min_visible * area
                 : (fx(r.x0) == (r.x0 * w - crop_x) / crop_w &&
                    fy(r.y0) == (r.y0 * h - crop_y) / crop_h &&
                    fx(r.x1) == (r.x1 * w - crop_x) / crop_w &&
                    fy(r.y1) == (r.y1 * h - crop_y) / crop_h))
      out.push_back(std::move(c));
  }
  return out;
}

QuantizedBox quantize_box(double x0, double y0, double x1, double y1, std::int64_t bins) {
  core::require(bins >= 2, "box quantization needs at least 2 bins, got " + std::to_string(bins));
  const bool finite =
      std::isfinite(x0) && std::isfinite(y0) && std::isfinite(x1) && std::isfinite(y1);
  core::require(finite && x0 <= x1 && y0 <= y1, "a box needs finite x0 <= x1 and y0 <= y1, got [" +
                                                    std::to_string(x0) + ", " + std::to_string(y0) +
                                                    ", " + std::to_string(x1) + ", " +
                                                    std::to_string(y1) + "]");
  const auto top = static_cast<double>(bins - 1);
  auto q = [&](double v) {
    return static_cast<std::int64_t>(std::lround(std::min(std::max(v, 0.0), 1.0) * top));
  };
  return {q(x0), q(y0), q(x1), q(y1)};
}

std::string box_text(const QuantizedBox& b) {
  return std::to_string(b.x0) + " " + std::to_string(b.y0) + " " + std::to_string(b.x1) + " " +
         std::to_string(b.y1);
}

TaskSequence region_task_sequence(const tokenizer::Tokenizer& tok, RegionTask task, const Region& r,
                                  std::int64_t bins) {
  const auto box = box_text(quantize_box(r.x0, r.y0, r.x1, r.y1, bins));
  const std::string prefix =
      task == RegionTask::aref ? "aref: " + r.phrase + " :" : "gcap: " + box + " :";
  const std::string target = task == RegionTask::aref ? box : r.phrase;
  // The tokenizer's frame: ids common to "" and "x" lead (the start id, if any); the empty
  // text's next id ends a text (the end id, or padding).
  const auto empty = encode(tok, ""), one = encode(tok, "x");
  std::size_t lead = 0;
  while (lead < empty.size() && empty[lead] == one[lead]) ++lead;
  const auto end = lead < empty.size() ? empty[lead] : std::int64_t{0};
  TaskSequence out;
  out.tokens = encode(tok, prefix + " " + target);
  const auto head = encode(tok, prefix);
  out.target_start = content_end(head, lead, end);
  if (content_end(out.tokens, lead, end) <= out.target_start) {
    out.target_start = tok.context_length();  // the context holds no target id
    return out;
  }
  for (std::int64_t i = 0; i < out.target_start; ++i)
    core::require(head[static_cast<std::size_t>(i)] == out.tokens[static_cast<std::size_t>(i)],
                  "the tokenizer splits the region task text \"" + prefix + " " + target +
                      "\" differently from its prefix; LocCa's region tasks need a tokenizer "
                      "that splits at spaces");
  return out;
}

std::vector<Region> parse_regions(const std::string& json_text, const std::string& sample) {
  const auto j = nlohmann::json::parse(json_text, nullptr, false);
  core::require(!j.is_discarded() && j.is_object(),
                "sample " + sample + ": its json member is not a JSON object");
  std::vector<Region> out;
  if (!j.contains("regions") || j["regions"].is_null()) return out;
  core::require(j["regions"].is_array(), "sample " + sample +
                                             ": json \"regions\" must be a list of " +
                                             "{\"box\": [x0, y0, x1, y1], \"phrase\": ...}");
  for (std::size_t i = 0; i < j["regions"].size(); ++i)
    out.push_back(parse_region(j["regions"][i],
                               "sample " + sample + ": json regions[" + std::to_string(i) + "]"));
  return out;
}

namespace {

std::uint64_t mix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

at::Tensor to_tensor(const std::vector<std::int64_t>& flat, std::int64_t rows, std::int64_t cols) {
  return at::tensor(flat, at::TensorOptions().dtype(at::kLong)).view({rows, cols});
}

}  // namespace

RegionBatch make_region_batch(const std::vector<std::vector<Region>>& samples,
                              const tokenizer::Tokenizer& tok, std::int64_t bins,
                              std::uint64_t seed, std::int64_t step) {
  RegionBatch out;
  std::vector<std::int64_t> rows, aref, aref_start, gcap, gcap_start;
  const auto ctx = tok.context_length();
  for (std::size_t i = 0; i < samples.size(); ++i) {
    const auto& rs = samples[i];
    if (rs.empty()) {
      ++out.without_regions;
      continue;
    }
    const auto h = mix64(seed ^ mix64(static_cast<std::uint64_t>(step) ^ mix64(i)));
    const Region& r = rs[h % rs.size()];
    const auto a = region_task_sequence(tok, RegionTask::aref, r, bins);
    const auto g = region_task_sequence(tok, RegionTask::gcap, r, bins);
    if (a.target_start >= ctx || g.target_start >= ctx) {
      ++out.no_room;
      continue;
    }
    rows.push_back(static_cast<std::int64_t>(i));
    aref.insert(aref.end(), a.tokens.begin(), a.tokens.end());
    aref_start.push_back(a.target_start);
    gcap.insert(gcap.end(), g.tokens.begin(), g.tokens.end());
    gcap_start.push_back(g.target_start);
  }
  const auto n = static_cast<std::int64_t>(rows.size());
  out.rows = at::tensor(rows, at::TensorOptions().dtype(at::kLong));
  out.aref_tokens = to_tensor(aref, n, ctx);
  out.aref_start = at::tensor(aref_start, at::TensorOptions().dtype(at::kLong));
  out.gcap_tokens = to_tensor(gcap, n, ctx);
  out.gcap_start = at::tensor(gcap_start, at::TensorOptions().dtype(at::kLong));
  return out;
}

}  // namespace clipper::data
