#pragma once
// Internal to the data part: the fields of a raw sample as the loader reads them (shared with
// `clipper data stats`, so both count the same samples as bad).
#include <cstdint>
#include <string>
#include <vector>

#include "clipper/data/regions.hpp"
#include "clipper/data/tar_stream.hpp"

namespace clipper::data::detail {

// The first of `image_keys` the sample holds, or nullptr.
const std::string* find_image(const RawSample& s, const std::vector<std::string>& image_keys);
// The caption under `text_key` ("txt", or "json:FIELD" with FIELD a dotted path); false when
// absent.
bool extract_text(const RawSample& s, const std::string& text_key, std::string* text);
// The class index: an entry (e.g. "cls") holding a decimal integer; false when absent or not one.
bool extract_label(const RawSample& s, const std::string& key, std::int64_t* label);
// The regions listed in the member `key` (data.regions_key, docs/data.md "Regions"), as stored:
// none when the sample has no such member. false, with `why` naming `sample` and the entry
// (parse_regions), when the member's regions are invalid.
bool extract_regions(const RawSample& s, const std::string& key, const std::string& sample,
                     std::vector<Region>* regions, std::string* why);

}  // namespace clipper::data::detail
