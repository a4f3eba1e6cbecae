#include "clipper/train/metrics.hpp"

#include <nlohmann/json.hpp>

#include <cmath>

#include "clipper/core/error.hpp"

namespace clipper::train {

JsonlSink::JsonlSink(const std::string& path) : path_(path), out_(path, std::ios::app) {
  if (!out_) throw core::Error("cannot open metrics file '" + path + "' for writing");
}

void JsonlSink::write(std::int64_t step, const Scalars& scalars) {
  nlohmann::ordered_json j;
  j["step"] = step;
  for (const auto& [name, value] : scalars) {
    if (std::isfinite(value))
      j[name] = value;
    else
      j[name] = nullptr;
  }
  out_ << j.dump() << '\n';
}

void JsonlSink::flush() {
  out_.flush();
}

}  // namespace clipper::train
