#pragma once
// Interop tests check the shipped full-size architectures cut to 2 blocks per tower: every width,
// head count, MLP size, activation, eps and context length as shipped, seconds instead of minutes
// on 2 cores. CLIPPER_INTEROP_FULL_DEPTH=1 (scripts/check_full_depth.sh) runs them whole.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "clipper/core/atomic_file.hpp"
#include "clipper/model/model_spec.hpp"
#include "test_util.hpp"

namespace clipper::test {

inline bool interop_full_depth() {
  const char* full = std::getenv("CLIPPER_INTEROP_FULL_DEPTH");
  return full && *full == '1';
}

struct CutModel {
  std::int64_t vocab = 0;     // > 0: this vocabulary instead of the shipped one
  bool rename_trunk = false;  // a timm trunk becomes "<timm name>-2blocks" (for open_clip's side)
};

// NAME's model file with 2 ViT blocks (a ModifiedResNet: one bottleneck per stage, downsampling
// kept) and 2 text blocks, written into `dir`; returns its path. Fails the test where a count
// is not found in the file.
inline std::string write_cut_model(const TempDir& dir, const std::string& name, CutModel o = {}) {
  const auto spec = model::load_model_spec(name);
  auto text = core::read_file(spec.path);
  auto replace = [&](const std::string& from, const std::string& to) {
    const auto at = text.find(from);
    EXPECT_NE(at, std::string::npos) << name << ": no '" << from << "'";
    if (at != std::string::npos) text.replace(at, from.size(), to);
  };
  if (!spec.vision_resnet_layers.empty()) {
    const auto at = text.find("  layers: [");
    replace(text.substr(at, text.find('\n', at) - at), "  layers: [1, 1, 1, 1]");
  } else {
    replace("  layers: " + std::to_string(spec.vision_layers) + "\n", "  layers: 2\n");
  }
  replace("  layers: " + std::to_string(spec.text_layers) + "\n", "  layers: 2\n");
  if (o.vocab > 0)
    replace("vocab_size: " + std::to_string(spec.vocab_size),
            "vocab_size: " + std::to_string(o.vocab));
  if (o.rename_trunk) {
    const auto trunk = "timm_model_name: " + spec.timm_model_name;
    replace(trunk, trunk + "-2blocks");
  }
  return dir.write(name + "-2blocks.yaml", text);
}

}  // namespace clipper::test
