// clipper shards OUT_DIR (--from-folder DIR | --from-csv TABLE | --from-idx IMAGES LABELS --classes
// YAML) Writes WebDataset shards and sizes.json (see clipper/data/shard_writer.hpp).
#include <iostream>
#include <memory>

#include "verbs.hpp"

#include "clipper/core/error.hpp"
#include "clipper/data/shard_writer.hpp"
#include "clipper/eval/benchmark_dataset.hpp"

namespace clipper::cli {
namespace {

struct ShardsArgs {
  std::string out_dir, folder, csv_path, classes;
  std::vector<std::string> idx;
  data::CsvOptions csv;
  std::string csv_separator;
  std::string transparency = "white";
  data::ShardWriterOptions w;
  bool no_resume = false;
  bool clip_benchmark = false;
  std::string split = "test";
  std::uint64_t seed = 0;
  std::int64_t limit = 0;
};

// --classes with --from-folder: a YAML class file, a text file of names (one per line, as
// CLIP_benchmark's classnames.txt) or imagenet1k (OpenAI's names and 80 templates).
data::ClassFile class_names(const std::string& classes) {
  if (classes == "imagenet1k")
    return {eval::builtin_list("imagenet1k", "classnames"),
            eval::builtin_list("imagenet1k", "templates")};
  const auto dot = classes.rfind('.');
  if (dot != std::string::npos && classes.substr(dot) == ".txt") {
    data::ClassFile f;
    for (auto& line : eval::read_lines(classes))
      if (!line.empty()) f.classes.push_back(std::move(line));
    core::require(!f.classes.empty(), "shards: '" + classes + "' lists no class name");
    return f;
  }
  return data::read_class_file(classes);
}

int run_shards(ShardsArgs& a) {
  a.w.out_dir = a.out_dir;
  if (a.clip_benchmark) {
    core::require(!a.classes.empty() && (!a.idx.empty() || !a.folder.empty()),
                  "shards: --clip-benchmark writes a classification folder: give --from-idx or "
                  "--from-folder with --classes");
    core::require(!a.split.empty() && a.split.find('/') == std::string::npos,
                  "shards: --split must be a folder name, not '" + a.split + "'");
    a.w.out_dir = a.out_dir + "/" + a.split;
    a.w.clip_benchmark_names = true;
  }
  a.w.resume = !a.no_resume;
  a.w.transparency = data::parse_transparency(a.transparency, "shards: --transparency");
  if (a.w.transparency.rule == data::Transparency::Rule::openclip)
    throw core::InputError(
        "shards: --transparency openclip acts in the transform (embed, the loader: the alpha "
        "kept through the resize), and shards hold whole decoded pictures; use drop (PIL's "
        "convert(\"RGB\")) or a background");
  data::ShardsReport r;
  if (!a.folder.empty() && !a.classes.empty()) {
    r = data::shards_from_class_folders(a.folder, class_names(a.classes), "'" + a.classes + "'",
                                        a.w, a.seed);
  } else if (!a.folder.empty()) {
    r = data::shards_from_folder(a.folder, a.w);
  } else if (!a.csv_path.empty()) {
    if (!a.csv_separator.empty()) {
      const std::string& s = a.csv_separator;
      core::require(s == "\\t" || s == "tab" || s.size() == 1,
                    "shards: --csv-separator takes one character or '\\t', not '" + s + "'");
      a.csv.separator = s.size() == 1 ? s[0] : '\t';
    }
    r = data::shards_from_csv(a.csv_path, a.csv, a.w);
  } else if (!a.idx.empty()) {
    core::require(!a.classes.empty(), "shards: --from-idx needs --classes FILE.yaml");
    r = data::shards_from_idx(a.idx[0], a.idx[1], a.classes, a.w, a.seed, a.limit);
  } else {
    throw core::InputError("shards: give one input: --from-folder, --from-csv or --from-idx");
  }
  if (a.clip_benchmark)
    data::write_clip_benchmark_metadata(
        a.out_dir, a.split,
        !a.idx.empty() ? data::read_class_file(a.classes) : class_names(a.classes), r);
  std::cout << r.summary() << "\n";
  return 0;
}

void setup_shards_verb(CLI::App& app, Action* action) {
  auto a = std::make_shared<ShardsArgs>();
  auto* v =
      app.add_subcommand("shards", "Write WebDataset shards + sizes.json from images and captions");
  v->add_option("out_dir", a->out_dir, "output folder")->required();
  auto* f = v->add_option("--from-folder", a->folder,
                          "a folder of images with .txt captions beside them; with --classes, "
                          "a class-per-subfolder tree (sorted folder names = classes 0..C-1)");
  auto* c = v->add_option("--from-csv", a->csv_path,
                          "a CSV/TSV table with a header row (OpenCLIP's csv input)");
  auto* i =
      v->add_option("--from-idx", a->idx, "IDX images and labels files (MNIST format, .gz or not)")
          ->expected(2);
  f->excludes(c)->excludes(i);
  c->excludes(i);
  v->add_option("--classes", a->classes,
                "with --from-idx or --from-folder: YAML with 'classes' and 'templates' (\"a "
                "photo of a {}.\"); with --from-folder also a .txt of names (one per line) or "
                "imagenet1k (OpenAI's ImageNet names and templates)");
  v->add_option("--csv-img-key", a->csv.image_column, "column of image paths")
      ->capture_default_str();
  v->add_option("--csv-caption-key", a->csv.caption_column, "column of captions")
      ->capture_default_str();
  v->add_option("--csv-separator", a->csv_separator,
                "field separator, e.g. ',' or '\\t' (default: sniffed from the header, a tab if "
                "it has one, else ','; a tab as OpenCLIP when neither)");
  v->add_flag("--csv-paths-from-cwd", a->csv.paths_from_cwd,
              "relative image paths from the working directory (OpenCLIP's rule) instead of the "
              "table's folder");
  v->add_option("--threads", a->w.threads, "decode/resize/encode threads (0: all cores)")
      ->capture_default_str();
  v->add_option("--progress-every", a->w.progress_every_s,
                "seconds between progress lines (0: none)")
      ->capture_default_str();
  v->add_flag("--no-resume", a->no_resume,
              "rewrite every shard instead of keeping the complete ones of an earlier run");
  v->add_option("--max-image-pixels", a->w.max_image_pixels,
                "larger input images are skipped (counted as too_large)")
      ->capture_default_str();
  v->add_option("--max-idx-bytes", a->w.max_idx_bytes,
                "with --from-idx: IDX files whose header declares more bytes are refused before "
                "they are read (a .gz is decompressed only up to what its header declares)")
      ->capture_default_str();
  v->add_option("--prefix", a->w.prefix, "shard file names PREFIX-00000.tar, ...")
      ->capture_default_str();
  v->add_option("--samples-per-shard", a->w.samples_per_shard, "samples in each shard")
      ->capture_default_str();
  v->add_option("--resize", a->w.resize,
                "shorter side in pixels; smaller images are upscaled to it, as img2dataset does "
                "(--no-upscale keeps them as they are); 0: keep every size, JPEG bytes copied")
      ->capture_default_str();
  v->add_flag("--no-upscale", a->w.no_upscale,
              "with --resize: images whose shorter side is already no larger keep their size");
  v->add_option("--quality", a->w.quality, "JPEG quality")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  v->add_option("--digits", a->w.digits, "digits of the shard number")->capture_default_str();
  v->add_option("--seed", a->seed,
                "with --from-idx or --classes: picks each sample's caption template")
      ->capture_default_str();
  v->add_option("--transparency", a->transparency,
                "transparent pixels: composited over white, black or #RRGGBB, or drop (PIL's "
                "convert(\"RGB\"))")
      ->capture_default_str();
  v->add_flag("--clip-benchmark", a->clip_benchmark,
              "with --classes: write OUT_DIR as a CLIP_benchmark folder (classnames.txt, "
              "zeroshot_classification_templates.txt, SPLIT/nshards.txt, SPLIT/0.tar ..., keys "
              "s0000000 ...) for clipper benchmark and clip_benchmark");
  v->add_option("--split", a->split, "with --clip-benchmark: the split folder")
      ->capture_default_str();
  v->add_option("--limit", a->limit, "with --from-idx: only the first N samples (0: all)")
      ->capture_default_str();
  v->callback([a, action] { *action = [a] { return run_shards(*a); }; });
}

}  // namespace

CLIPPER_REGISTER_VERB(shards, setup_shards_verb);

}  // namespace clipper::cli
