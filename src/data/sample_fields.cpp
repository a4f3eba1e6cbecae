#include "sample_fields.hpp"

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "clipper/core/error.hpp"
#include "clipper/core/text.hpp"

namespace clipper::data::detail {

const std::string* find_image(const RawSample& s, const std::vector<std::string>& image_keys) {
  for (const auto& ext : image_keys)
    if (const std::string* img = s.find(ext)) return img;
  return nullptr;
}

bool extract_label(const RawSample& s, const std::string& key, std::int64_t* label) {
  const std::string* t = s.find(key);
  if (!t) return false;
  const std::string v = core::trim(*t);
  if (v.empty()) return false;
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (end != v.c_str() + v.size()) return false;
  *label = x;
  return true;
}

bool extract_regions(const RawSample& s, const std::string& key, const std::string& sample,
                     std::vector<Region>* regions, std::string* why) {
  regions->clear();
  const std::string* js = s.find(key);
  if (!js) return true;
  try {
    *regions = parse_regions(*js, sample);
    return true;
  } catch (const core::InputError& e) {
    if (why) *why = e.what();
    return false;
  }
}

bool extract_text(const RawSample& s, const std::string& text_key, std::string* text) {
  if (text_key.rfind("json:", 0) == 0) {
    const std::string* js = s.find("json");
    if (!js) return false;
    const auto j = nlohmann::json::parse(*js, nullptr, false);
    if (j.is_discarded()) return false;
    const nlohmann::json* cur = &j;
    for (const auto& part : core::split(text_key.substr(5), '.')) {
      if (!cur->is_object() || !cur->contains(part)) return false;
      cur = &(*cur)[part];
    }
    if (!cur->is_string()) return false;
    *text = cur->get<std::string>();
    return true;
  }
  const std::string* t = s.find(text_key);
  if (!t) return false;
  *text = *t;
  return true;
}

}  // namespace clipper::data::detail
