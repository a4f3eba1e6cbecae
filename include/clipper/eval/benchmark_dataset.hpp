#pragma once
// CLIP_benchmark's webdataset folders (as LAION publishes them on Hugging Face), read without
// Python:
//   <root>/classnames.txt                          one class name per line; line i = label i
//   <root>/zeroshot_classification_templates.txt   one template per line, with {c}
//   <root>/dataset_type.txt                        "retrieval" | "multilabel"; absent: classes
//   <root>/<split>/nshards.txt                     N
//   <root>/<split>/0.tar .. (N-1).tar              image (.webp/.png/.jpg/.jpeg) + .cls (an
//                                                  ASCII integer) | .npy (multilabel vector) |
//                                                  .txt (retrieval: captions, one per line)
// A sizes.json beside the shards is not needed (every sample is read once, in order).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "clipper/data/image.hpp"

namespace clipper::eval {

enum class DatasetKind { classification, multilabel, retrieval };
const char* to_string(DatasetKind k);

// DataComp's own evaluators for classification tasks whose main metric needs more than the
// labels (eval_utils/wilds_eval.py, fairness_eval.py), by DataComp's task key: "wilds/iwildcam"
// (macro F1), "wilds/fmow" (worst region, worst year), "fairness/dollar_street" (worst income
// group, top-5), "fairness/geode" (worst region). Their groups come from each sample's .npy
// metadata row (include/clipper/eval/group_metrics.hpp).
enum class GroupEval { none, iwildcam, fmow, dollar_street, geode };
GroupEval parse_group_eval(const std::string& key, const std::string& where);
const char* to_string(GroupEval e);

struct BenchmarkDataset {
  std::string root;
  std::string name;  // "wds/<folder name>", as CLIP_benchmark is told the dataset
  DatasetKind kind = DatasetKind::classification;
  std::vector<std::string> classnames;  // empty for retrieval
  std::vector<std::string> templates;   // with "{c}"; empty for retrieval
  // DataComp's evaluator for the task (a suite's `evaluator:`): its samples also carry an .npy
  // metadata row, and its metrics are added.
  GroupEval group_eval = GroupEval::none;
  // When set, the shards of every split (clipper's own eval shards, eval.zeroshot_shards: a
  // brace pattern expanded, no nshards.txt).
  std::vector<std::string> shard_files;
  // The shard files of `split` from <root>/<split>/nshards.txt (InputError naming the file when it
  // is missing or not a positive integer, or a shard is missing).
  std::vector<std::string> shards(const std::string& split) const;
  // True when <root>/<split> is a class-per-subfolder tree (ImageNet's own train/ and val/: one
  // folder per class, sorted names = labels 0..C-1) rather than shards.
  bool is_tree(const std::string& split) const;
  // A tree split's image files (.jpg, .jpeg, .png, .webp, any case) with their labels, in sorted
  // order; InputError when a class folder is empty or the count differs from the class names.
  std::vector<std::pair<std::string, std::int64_t>> tree_files(const std::string& split) const;
};

// Where class names and templates come from when the folder has none (or to override it): a text
// file (one per line), or "imagenet1k": OpenAI's 1,000 ImageNet class names / 80 templates, the
// built-in lists under share/clipper/configs/benchmark/.
struct DatasetOverrides {
  std::string classnames;
  std::string templates;
};

// Reads the folder's metadata. Without a templates file a classification folder gets OpenAI's 80
// ImageNet templates (CLIP_benchmark's default); without class names it is an InputError naming
// the file and --classnames, except for a class-per-subfolder tree of ImageNet's 1,000 WordNet ids
// (n01440764 ...), which gets OpenAI's ImageNet class names.
BenchmarkDataset open_benchmark_dataset(const std::string& root,
                                        const DatasetOverrides& overrides = {});

// One line per entry, each stripped of surrounding white space, as CLIP_benchmark reads
// classnames.txt and the templates; `builtin` "imagenet1k" for the built-in list of `what`
// ("classnames" or "templates").
std::vector<std::string> read_lines(const std::string& path);
std::vector<std::string> builtin_list(const std::string& name, const std::string& what);
// The path of a data file under share/clipper/ (e.g. "configs/benchmark/datacomp.yaml"); empty
// when it is not installed.
std::string builtin_path(const std::string& relative);

// Fills a template's "{c}" (CLIP_benchmark's placeholder) or "{}" (clipper's class files) with
// `name`; a template with neither gets " name" appended.
std::string fill_template(const std::string& templ, const std::string& name);

struct ReaderOptions {
  int image_size = 224;
  std::int64_t batch_size = 64;
  int threads = 2;  // image decode threads
  // Decode the next batch (on its own thread and the decode threads) while the caller encodes
  // the current one; false: read, decode and return one batch at a time.
  bool overlap = true;
  data::Transparency transparency;
  // The model's preprocess_cfg (run_benchmark takes them from the model's spec).
  model::ResizeMode resize_mode = model::ResizeMode::shortest;
  model::Interpolation interpolation = model::Interpolation::bicubic;
  // NaFlex (both > 0): pictures at their aspect ratio as patches (data::TransformSpec).
  int naflex_patch = 0;
  std::int64_t naflex_max_tokens = 0;
  std::int64_t max_image_pixels = 89478485;
  int rank = 0, world_size = 1;  // sample j of the split goes to rank j % world_size
};

struct BenchmarkBatch {
  at::Tensor images;       // uint8 [B, S, S, 3] (resize shorter side + center crop)
                           // NaFlex: uint8 [B, max_tokens, P*P*3] patches
  at::Tensor grids;        // NaFlex: int64 [B, 2] each picture's patch grid (rows, columns)
  at::Tensor labels;       // classification: int64 [B]
  at::Tensor multilabels;  // multilabel: float [B, classes] (0/1)
  at::Tensor metadata;     // with a GroupEval that reads metadata: float [B, fields] (.npy)
  std::vector<std::vector<std::string>> captions;  // retrieval: each image's captions
  std::vector<std::string> keys;                   // "shard:key"
};

// Streams a split's samples in shard order, in batches. Every problem (an unreadable or
// truncated shard, a sample without image or label, an undecodable image, a label outside the
// classes) is an InputError naming the shard and the sample: a benchmark figure over the samples
// that happened to decode would not be the published one.
class BenchmarkReader {
 public:
  BenchmarkReader(const BenchmarkDataset& dataset, const std::string& split, ReaderOptions o);
  ~BenchmarkReader();
  BenchmarkReader(const BenchmarkReader&) = delete;
  BenchmarkReader& operator=(const BenchmarkReader&) = delete;

  // The next batch of this rank's samples; nullopt at the end of the split.
  std::optional<BenchmarkBatch> next();
  // Samples delivered so far.
  std::int64_t samples() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// `clipper data stats FOLDER`: the folder's metadata (dataset name, task, class and template
// counts) and, for each split it holds (<split>/nshards.txt or a class tree), the shards, samples,
// samples per class (classification), positives per class (multilabel) or captions (retrieval),
// classes without any, and the samples its reader would refuse (no image, no label entry, a label
// outside the classes, a damaged shard) by kind with the first five named. Images are not decoded.
nlohmann::ordered_json describe_benchmark_folder(const std::string& root);
// That description as lines for the console.
std::string benchmark_folder_text(const nlohmann::ordered_json& description);

// A .npy holding a 1-D (or [1, C]) vector of bool, integers or floats, as float32 [C]; `what`
// names the sample in the InputError.
at::Tensor parse_npy_vector(const std::string& bytes, const std::string& what);

}  // namespace clipper::eval
