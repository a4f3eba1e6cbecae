// clipper shards OUT_DIR (--from-folder DIR | --from-csv TABLE | --from-idx IMAGES LABELS --classes
// YAML) Writes WebDataset shards and sizes.json (see clipper/data/shard_writer.hpp).
#include <iostream>
#include <memory>

#include "verbs.hpp"

#if CLIPPER_HAS_DATA
#include "clipper/core/error.hpp"
#include "clipper/data/shard_writer.hpp"
#endif

namespace clipper::cli {
namespace {

#if CLIPPER_HAS_DATA
struct ShardsArgs {
  std::string out_dir, folder, csv, classes;
  std::vector<std::string> idx;
  std::string csv_img_key = "filepath", csv_caption_key = "title", csv_separator;
  data::ShardWriterOptions w;
  std::uint64_t seed = 0;
  std::int64_t limit = 0;
};

void setup_shards_verb(CLI::App& app, Action* action) {
  auto a = std::make_shared<ShardsArgs>();
  auto* v =
      app.add_subcommand("shards", "Write WebDataset shards + sizes.json from images and captions");
  v->add_option("out_dir", a->out_dir, "output folder")->required();
  auto* f = v->add_option("--from-folder", a->folder,
                          "a folder of images with .txt captions beside them");
  auto* c = v->add_option("--from-csv", a->csv,
                          "a CSV/TSV table with a header row (OpenCLIP's csv input)");
  auto* i =
      v->add_option("--from-idx", a->idx, "IDX images and labels files (MNIST format, .gz or not)")
          ->expected(2);
  f->excludes(c)->excludes(i);
  c->excludes(i);
  v->add_option("--classes", a->classes,
                "with --from-idx: YAML with 'classes' and 'templates' (\"a photo of a {}.\")");
  v->add_option("--csv-img-key", a->csv_img_key, "column of image paths")->capture_default_str();
  v->add_option("--csv-caption-key", a->csv_caption_key, "column of captions")
      ->capture_default_str();
  v->add_option("--csv-separator", a->csv_separator,
                "field separator (default: tab for .tsv, else ',')");
  v->add_option("--prefix", a->w.prefix, "shard file names PREFIX-00000.tar, ...")
      ->capture_default_str();
  v->add_option("--samples-per-shard", a->w.samples_per_shard, "samples in each shard")
      ->capture_default_str();
  v->add_option("--resize", a->w.resize, "shorter side in pixels (0: keep size, JPEG bytes copied)")
      ->capture_default_str();
  v->add_option("--quality", a->w.quality, "JPEG quality")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  v->add_option("--digits", a->w.digits, "digits of the shard number")->capture_default_str();
  v->add_option("--seed", a->seed, "with --from-idx: picks each sample's caption template")
      ->capture_default_str();
  v->add_option("--limit", a->limit, "with --from-idx: only the first N samples (0: all)")
      ->capture_default_str();
  v->callback([a, action] {
    *action = [a] {
      a->w.out_dir = a->out_dir;
      data::ShardsReport r;
      if (!a->folder.empty()) {
        r = data::shards_from_folder(a->folder, a->w);
      } else if (!a->csv.empty()) {
        char sep = ',';
        if (!a->csv_separator.empty())
          sep = a->csv_separator == "\\t" ? '\t' : a->csv_separator[0];
        else if (a->csv.size() > 4 && a->csv.substr(a->csv.size() - 4) == ".tsv")
          sep = '\t';
        r = data::shards_from_csv(a->csv, a->csv_img_key, a->csv_caption_key, sep, a->w);
      } else if (!a->idx.empty()) {
        core::require(!a->classes.empty(), "shards: --from-idx needs --classes FILE.yaml");
        r = data::shards_from_idx(a->idx[0], a->idx[1], a->classes, a->w, a->seed, a->limit);
      } else {
        throw core::InputError("shards: give one input: --from-folder, --from-csv or --from-idx");
      }
      std::cout << "wrote " << r.samples << " samples in " << r.shards.size()
                << " shard(s): " << r.pattern;
      if (r.skipped) std::cout << " (" << r.skipped << " input(s) skipped)";
      std::cout << "\n";
      return 0;
    };
  });
}
#else
void setup_shards_verb(CLI::App& app, Action* action) {
  auto* v = app.add_subcommand("shards",
                               "Write WebDataset shards (needs a build with CLIPPER_DATA_LIBS=ON)");
  v->allow_extras();
  v->callback([action] {
    *action = [] {
      std::cerr
          << "error: this clipper was built without the data libraries (CLIPPER_DATA_LIBS=OFF)\n";
      return 1;
    };
  });
}
#endif

}  // namespace

CLIPPER_REGISTER_VERB(shards, setup_shards_verb);

}  // namespace clipper::cli
