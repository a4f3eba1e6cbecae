#include "clipper/config/from_openclip.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>

#include "clipper/config/loader.hpp"
#include "clipper/core/error.hpp"

namespace clipper::config {
namespace {

using core::InputError;

// How many values an OpenCLIP flag takes (argparse: store_true, one value, nargs '+' or '*').
enum class Arity { none, one, many, any };

struct Flag {
  const char* name;
  Arity arity;
};

// open_clip_train/params.py of OpenCLIP 3.3.0, every flag.
const std::vector<Flag>& openclip_flags() {
  static const std::vector<Flag> all = [] {
    std::vector<Flag> f;
    for (const char* n : {"--dataset-resampled",
                          "--log-local",
                          "--use-bn-sync",
                          "--skip-scheduler",
                          "--save-most-recent",
                          "--pretrained-image",
                          "--lock-image",
                          "--lock-image-freeze-bn-stats",
                          "--grad-checkpointing",
                          "--local-loss",
                          "--gather-with-grad",
                          "--force-quick-gelu",
                          "--force-custom-text",
                          "--torchscript",
                          "--torchcompile",
                          "--trace",
                          "--debug",
                          "--copy-codebase",
                          "--horovod",
                          "--ddp-static-graph",
                          "--no-set-device-rank",
                          "--lock-text",
                          "--lock-text-freeze-layer-norm",
                          "--delete-previous-checkpoint",
                          "--siglip"})
      f.push_back({n, Arity::none});
    for (const char* n : {"--image-mean", "--image-std", "--force-image-size"})
      f.push_back({n, Arity::many});
    f.push_back({"--aug-cfg", Arity::any});
    for (const char* n : {"--train-data",
                          "--train-data-upsampling-factors",
                          "--val-data",
                          "--train-num-samples",
                          "--val-num-samples",
                          "--dataset-type",
                          "--csv-separator",
                          "--csv-img-key",
                          "--csv-caption-key",
                          "--imagenet-val",
                          "--imagenet-v2",
                          "--cache-dir",
                          "--logs",
                          "--name",
                          "--workers",
                          "--batch-size",
                          "--epochs",
                          "--epochs-cooldown",
                          "--lr",
                          "--beta1",
                          "--beta2",
                          "--eps",
                          "--wd",
                          "--momentum",
                          "--warmup",
                          "--opt",
                          "--lr-scheduler",
                          "--lr-cooldown-end",
                          "--lr-cooldown-power",
                          "--save-frequency",
                          "--zeroshot-frequency",
                          "--val-frequency",
                          "--resume",
                          "--precision",
                          "--model",
                          "--pretrained",
                          "--lock-image-unlocked-groups",
                          "--image-interpolation",
                          "--image-resize-mode",
                          "--force-context-length",
                          "--force-patch-dropout",
                          "--accum-freq",
                          "--device",
                          "--dist-url",
                          "--dist-backend",
                          "--report-to",
                          "--wandb-notes",
                          "--wandb-project-name",
                          "--seed",
                          "--grad-clip-norm",
                          "--lock-text-unlocked-layers",
                          "--log-every-n-steps",
                          "--coca-caption-loss-weight",
                          "--coca-contrastive-loss-weight",
                          "--remote-sync",
                          "--remote-sync-frequency",
                          "--remote-sync-protocol",
                          "--distill-model",
                          "--distill-pretrained",
                          "--use-bnb-linear",
                          "--loss-dist-impl"})
      f.push_back({n, Arity::one});
    return f;
  }();
  return all;
}

// argparse's lookup: the exact name, else the one flag that starts with it.
const Flag& find_flag(const std::string& name) {
  const Flag* prefix_match = nullptr;
  int prefix_matches = 0;
  for (const auto& f : openclip_flags()) {
    if (name == f.name) return f;
    if (std::string(f.name).rfind(name, 0) == 0) prefix_match = &f, ++prefix_matches;
  }
  if (prefix_matches == 1) return *prefix_match;
  throw InputError("'" + name + "' is " +
                   (prefix_matches > 1 ? "an ambiguous abbreviation of several OpenCLIP flags"
                                       : "not an OpenCLIP 3.3.0 training flag") +
                   " (open_clip_train/params.py)");
}

using Given = std::map<std::string, std::vector<std::string>>;

// argparse reads "-1" and "-.5" as values (no OpenCLIP flag looks like a number).
bool is_flag(const std::string& a) {
  return a.size() > 1 && a[0] == '-' && !std::isdigit(static_cast<unsigned char>(a[1])) &&
         a[1] != '.';
}

Given parse(const std::vector<std::string>& args) {
  Given given;
  for (std::size_t i = 0; i < args.size();) {
    std::string a = args[i++];
    if (!is_flag(a))
      throw InputError("unexpected argument '" + a +
                       "': OpenCLIP's training takes no positional "
                       "arguments (a value for a flag that takes none?)");
    std::optional<std::string> inline_value;
    if (const auto eq = a.find('='); eq != std::string::npos)
      inline_value = a.substr(eq + 1), a = a.substr(0, eq);
    const Flag& f = find_flag(a);
    std::vector<std::string> values;
    if (inline_value) values.push_back(*inline_value);
    if (f.arity == Arity::none && inline_value)
      throw InputError(std::string(f.name) + " takes no value, got '" + *inline_value + "'");
    if (f.arity != Arity::none && !inline_value)
      while (i < args.size() && !is_flag(args[i]) && (f.arity != Arity::one || values.empty()))
        values.push_back(args[i++]);
    if ((f.arity == Arity::one || f.arity == Arity::many) && values.empty())
      throw InputError(std::string(f.name) + " expects a value");
    given[f.name] = values;  // argparse: the last one wins
  }
  return given;
}

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : " ") + s;
  return out;
}

class Translator {
 public:
  Translator(Given g, const FromOpenClipOptions& o) : given_(std::move(g)), opt_(o) {}

  OpenClipTranslation run() {
    resolve_steps_per_epoch();
    model();
    data();
    optim();
    schedule();
    train();
    loss();
    checkpoint();
    logging();
    dist();
    not_carried();
    for (const auto& [flag, values] : given_)  // nothing is dropped without a word
      if (!touched_.count(flag))
        out_.not_honoured.push_back(shown(flag.c_str()) + ": no clipper equivalent");
    decisions();
    std::sort(out_.keys.begin(), out_.keys.end(),
              [](const auto& a, const auto& b) { return index_of(a.first) < index_of(b.first); });
    return std::move(out_);
  }

 private:
  static std::size_t index_of(const std::string& key) {
    const auto& all = keys();
    for (std::size_t i = 0; i < all.size(); ++i)
      if (all[i].key == key) return i;
    return all.size();
  }
  bool has(const char* f) const {
    touched_.insert(f);
    return given_.count(f) > 0;
  }
  std::string str(const char* f, const std::string& fallback = "") const {
    touched_.insert(f);
    const auto it = given_.find(f);
    return it == given_.end() || it->second.empty() ? fallback : it->second.front();
  }
  std::string shown(const char* f) const {
    const auto it = given_.find(f);
    return std::string(f) +
           (it == given_.end() || it->second.empty() ? "" : " " + joined(it->second));
  }
  double number(const char* f, double fallback) const {
    if (!has(f)) return fallback;
    const std::string s = str(f);
    char* end = nullptr;
    const double d = std::strtod(s.c_str(), &end);
    if (s.empty() || *end) throw InputError(std::string(f) + " '" + s + "': expected a number");
    return d;
  }
  std::int64_t integer(const char* f, std::int64_t fallback) const {
    if (!has(f)) return fallback;
    const std::string s = str(f);
    char* end = nullptr;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end) throw InputError(std::string(f) + " '" + s + "': expected an integer");
    return v;
  }
  bool is_set(const std::string& key) const {
    for (const auto& kv : out_.keys)
      if (kv.first == key) return true;
    return false;
  }
  void set(const std::string& key, Value v) {
    for (auto& kv : out_.keys)
      if (kv.first == key) return void(kv.second = std::move(v));
    out_.keys.emplace_back(key, std::move(v));
  }
  void refuse(const char* f, const std::string& why) {
    if (has(f)) out_.not_honoured.push_back(shown(f) + ": " + why);
  }
  void note(const std::string& text) { out_.notes.push_back(text); }
  void check(const std::string& text) { out_.to_check.push_back(text); }
  // An epoch count as steps, when the steps per epoch are known.
  bool epochs_to_steps(std::int64_t epochs, const std::string& key) {
    if (opt_.steps_per_epoch <= 0) return false;
    set(key, epochs * opt_.steps_per_epoch);
    converted_.push_back(key);
    return true;
  }
  void by_epoch(const char* f, std::int64_t epochs, const std::string& key) {
    if (epochs_to_steps(epochs, key)) return;
    if (has(f))
      out_.not_honoured.push_back(shown(f) + ": OpenCLIP counts it in epochs, clipper's " + key +
                                  " in steps; give --world-size N (the run's ranks, with "
                                  "--train-num-samples) or --steps-per-epoch N to convert it");
  }
  void resolve_steps_per_epoch();
  void check_model(const std::string& name) const;
  void decisions();

  void model();
  void data();
  void optim();
  void schedule();
  void train();
  void loss();
  void checkpoint();
  void logging();
  void dist();
  void not_carried();

  Given given_;
  mutable std::set<std::string> touched_;  // flags some rule looked at
  FromOpenClipOptions opt_;
  OpenClipTranslation out_;
  std::string steps_from_;              // how the steps per epoch were found, when computed
  std::vector<std::string> converted_;  // keys converted from epochs to steps
};

// With the run's world size, the steps per epoch follow from OpenCLIP's own numbers.
void Translator::resolve_steps_per_epoch() {
  if (opt_.steps_per_epoch > 0 || opt_.world_size <= 0 || !has("--train-num-samples")) return;
  const std::int64_t samples = integer("--train-num-samples", 0),
                     batch = integer("--batch-size", 64), accum = integer("--accum-freq", 1);
  const std::int64_t global = batch * opt_.world_size * std::max<std::int64_t>(1, accum);
  if (global <= 0 || samples / global <= 0)
    throw InputError("--train-num-samples " + std::to_string(samples) + " gives no full step of " +
                     std::to_string(global) + " samples (batch size x world size x accum_freq)");
  opt_.steps_per_epoch = samples / global;
  steps_from_ = std::to_string(samples) + " samples / (" + std::to_string(batch) + " x " +
                std::to_string(opt_.world_size) + " ranks x " + std::to_string(accum) + ")";
}

// `clipper train` refuses a model it has no architecture for: stop here, with the reason.
void Translator::check_model(const std::string& name) const {
  if (!opt_.known_model || opt_.known_model(name)) return;
  std::string why = "clipper has no architecture file " + name +
                    ".yaml (see `clipper models`; HF text towers and timm towers are not built)";
  std::string lower = name;
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower.rfind("coca_roberta", 0) == 0)
    why =
        "its text tower is a Hugging Face model (RoBERTa), which clipper does not build; the "
        "CoCa architectures with open_clip's own text tower (coca_ViT-B-32, ...) are in "
        "`clipper models`";
  else if (lower.rfind("nllb", 0) == 0)
    why =
        "its text tower is a Hugging Face model (NLLB), which clipper does not build; the "
        "SigLIP architectures with open_clip's own text tower (ViT-B-16-SigLIP, ...) are "
        "in `clipper models`";
  throw InputError("--model " + name + ": " + why + "; nothing written");
}

// The values written that the user should decide on, and required keys left unset.
void Translator::decisions() {
  if (!is_set("data.train_shards"))
    check("data.train_shards: not set (no webdataset --train-data): clipper train needs it");
  else if (str("--train-data").find("pipe:") != std::string::npos &&
           !is_set("data.train_num_samples"))
    check("data.train_num_samples: pipe: shards have no sizes.json; set the epoch's samples");
  if (!converted_.empty()) {
    std::string keys;
    for (const auto& k : converted_) keys += (keys.empty() ? "" : ", ") + k;
    check(keys + ": converted from epochs with " + std::to_string(opt_.steps_per_epoch) +
          " steps per epoch" + (steps_from_.empty() ? "" : " (" + steps_from_ + ")") +
          "; convert again if the world size, batch size or data change");
  }
  if (is_set("model.init_from"))
    check("model.init_from " + str("--pretrained") + ": must hold weights of this model.name");
  const std::int64_t keep = has("--delete-previous-checkpoint") ? 1 : integer("--epochs", 32);
  if (keep > 1)
    check("checkpoint.keep_last: " + std::to_string(keep) +
          " (OpenCLIP keeps every epoch's checkpoint); each holds the model and the AdamW "
          "moments: lower it if disk is short");
  if (is_set("checkpoint.sync_command"))
    check("checkpoint.sync_command: check the destination and that `aws` is on the PATH");
}

bool looks_like_path(const std::string& s) {
  for (const char* ext : {".pt", ".pth", ".bin", ".safetensors"})
    if (s.size() > std::string(ext).size() &&
        s.compare(s.size() - std::string(ext).size(), std::string::npos, ext) == 0)
      return true;
  return s.find('/') != std::string::npos;
}

void Translator::model() {
  check_model(str("--model", "RN50"));
  set("model.name", str("--model", "RN50"));  // OpenCLIP's default architecture
  const std::string pre = str("--pretrained");
  if (!pre.empty() && looks_like_path(pre))
    set("model.init_from", pre);
  else if (!pre.empty())
    refuse("--pretrained",
           "clipper downloads nothing: give the weights file (.pt, .bin or "
           ".safetensors, e.g. from open_clip's cache) as --pretrained PATH or "
           "model.init_from");
  if (has("--distill-model")) set("loss.distill_model", str("--distill-model"));
  const std::string teacher = str("--distill-pretrained");
  if (!teacher.empty() && looks_like_path(teacher))
    set("loss.distill_from", teacher);
  else if (!teacher.empty())
    refuse("--distill-pretrained",
           "clipper downloads nothing: give the teacher's weights file as "
           "--distill-pretrained PATH or loss.distill_from");
  if (has("--grad-checkpointing")) set("model.grad_checkpointing", true);
  if (has("--lock-image")) set("model.lock_image", true);
  if (has("--lock-image-unlocked-groups"))
    set("model.lock_image_unlocked_layers", integer("--lock-image-unlocked-groups", 0));
  if (has("--lock-image-freeze-bn-stats")) set("model.lock_image_freeze_bn_stats", true);
  if (has("--lock-text")) set("model.lock_text", true);
  if (has("--lock-text-unlocked-layers"))
    set("model.lock_text_unlocked_layers", integer("--lock-text-unlocked-layers", 0));
  if (has("--lock-text") && !has("--lock-text-freeze-layer-norm"))
    note(
        "--lock-text without --lock-text-freeze-layer-norm: OpenCLIP 3.3.0's CLIP text tower "
        "stops with an assertion there; clipper freezes a layer's LayerNorms with it (what "
        "--lock-text-freeze-layer-norm asks)");
  if (has("--force-quick-gelu")) set("model.force_quick_gelu", true);
  if (has("--force-patch-dropout"))
    set("model.force_patch_dropout", number("--force-patch-dropout", -1.0));
  if (has("--force-image-size")) {
    const auto& v = given_.at("--force-image-size");
    if (v.size() == 1 || (v.size() == 2 && v[0] == v[1]))
      set("model.force_image_size", integer("--force-image-size", 0));
    else
      refuse("--force-image-size", "clipper's images are square: one size only");
  }
}

void Translator::data() {
  const std::string type = str("--dataset-type", "auto");
  const std::string train = str("--train-data");
  const bool csv = type == "csv" || (type == "auto" && train.find(".csv") != std::string::npos);
  if (type == "synthetic")
    refuse("--dataset-type",
           "clipper has no synthetic dataset (clipper bench train measures "
           "steps without data)");
  else if (csv)
    refuse("--train-data",
           "clipper reads webdataset tar shards: convert the CSV with `clipper "
           "shards OUT --from-csv FILE` and give OUT's shards");
  else if (!train.empty())
    set("data.train_shards", train);
  if (has("--train-data-upsampling-factors")) {
    std::vector<double> w;
    std::string s = str("--train-data-upsampling-factors");
    for (std::size_t pos = 0;;) {
      const auto next = s.find("::", pos);
      const std::string part = s.substr(pos, next == std::string::npos ? next : next - pos);
      char* end = nullptr;
      w.push_back(std::strtod(part.c_str(), &end));
      if (part.empty() || *end)
        throw InputError("--train-data-upsampling-factors '" + s +
                         "': expected numbers joined "
                         "with '::', got '" +
                         part + "'");
      if (next == std::string::npos) break;
      pos = next + 2;
    }
    set("data.source_weights", w);
    note(
        "--train-data-upsampling-factors: clipper's data.source_weights weigh each source per "
        "shard drawn (resampled mode), OpenCLIP's multiply each source's size");
  }
  if (has("--train-num-samples")) set("data.train_num_samples", integer("--train-num-samples", 0));
  if (has("--dataset-resampled")) set("data.resampled", true);
  set("data.workers", std::max<std::int64_t>(1, integer("--workers", 4)));
  note("data.workers: clipper's loader threads per rank (OpenCLIP's --workers are processes)");
  const std::string val = str("--val-data");
  if (!val.empty() && val.find(".csv") != std::string::npos)
    refuse("--val-data",
           "clipper reads webdataset tar shards: convert it with `clipper shards "
           "OUT --from-csv FILE`");
  else if (!val.empty())
    set("eval.retrieval_shards", val);
  if (!val.empty())
    note(
        "--val-data: clipper's eval.retrieval_shards report recall@1/5/10 both ways (OpenCLIP "
        "also logs the validation loss, clipper does not)");
  refuse("--val-num-samples", "clipper evaluates every sample of eval.retrieval_shards");
  for (const char* f : {"--csv-separator", "--csv-img-key", "--csv-caption-key"})
    refuse(f, "CSV input: convert it with `clipper shards OUT --from-csv FILE`");
}

void Translator::optim() {
  const auto& opt = str("--opt", "adamw");
  if (opt != "adamw") refuse("--opt", "clipper trains with AdamW only");
  refuse("--momentum", "AdamW has no momentum (OpenCLIP uses it with timm optimizers only)");
  set("optim.lr", number("--lr", 5e-4));  // get_default_params
  if (has("--coca-caption-loss-weight"))
    set("loss.coca_caption_weight", number("--coca-caption-loss-weight", 2.0));
  if (has("--coca-contrastive-loss-weight"))
    set("loss.coca_clip_weight", number("--coca-contrastive-loss-weight", 1.0));
  set("optim.weight_decay", number("--wd", 0.2));
  if (has("--beta1")) set("optim.beta1", number("--beta1", 0.9));
  if (has("--beta2")) set("optim.beta2", number("--beta2", -1));
  if (has("--eps")) set("optim.eps", number("--eps", -1));
  if (has("--grad-clip-norm")) set("optim.grad_clip_norm", number("--grad-clip-norm", 0.0));
}

void Translator::schedule() {
  set("optim.warmup_steps", integer("--warmup", 10000));
  const std::string s = str("--lr-scheduler", "cosine");
  if (has("--skip-scheduler")) {
    set("optim.schedule", std::string("const"));
    set("optim.warmup_steps", std::int64_t{0});
    note(
        "--skip-scheduler: a constant rate without warmup (optim.schedule const, "
        "optim.warmup_steps 0)");
  } else if (s == "cosine" || s == "const" || s == "const-cooldown") {
    set("optim.schedule", s);
  } else {
    refuse("--lr-scheduler", "clipper's schedules are cosine, const and const-cooldown");
  }
  if (s == "const-cooldown") {
    if (!has("--epochs-cooldown"))
      note(
          "--lr-scheduler const-cooldown without --epochs-cooldown: OpenCLIP then cools down "
          "over no epochs; optim.cooldown_steps stays 0");
    if (has("--lr-cooldown-end")) set("optim.cooldown_end_lr", number("--lr-cooldown-end", 0.0));
    if (has("--lr-cooldown-power")) set("optim.cooldown_power", number("--lr-cooldown-power", 1.0));
  } else {
    for (const char* f : {"--lr-cooldown-end", "--lr-cooldown-power"})
      if (has(f))
        note(shown(f) + ": acts with --lr-scheduler const-cooldown only (as in OpenCLIP)");
  }
  if (has("--epochs-cooldown"))
    by_epoch("--epochs-cooldown", integer("--epochs-cooldown", 0), "optim.cooldown_steps");
}

void Translator::train() {
  set("train.batch_size", integer("--batch-size", 64));
  set("train.epochs", integer("--epochs", 32));
  if (has("--accum-freq")) set("train.accum_freq", integer("--accum-freq", 1));
  if (integer("--accum-freq", 1) > 1)
    note(
        "--accum-freq: clipper's logit_scale takes part in one pass only, so its gradient is "
        "the full batch's (docs/training.md); OpenCLIP's is accum_freq times that");
  const std::string p = str("--precision", "amp");
  if (p == "amp") {
    set("train.precision", std::string("auto"));
    note(
        "--precision amp: clipper autocasts to bf16 on CUDA (no GradScaler needed), OpenCLIP to "
        "fp16 with a GradScaler; fp32 on a CPU");
  } else if (p == "amp_bf16" || p == "amp_bfloat16") {
    set("train.precision", std::string("bf16"));
  } else if (p == "fp32") {
    set("train.precision", std::string("fp32"));
  } else {
    out_.not_honoured.push_back("--precision " + p +
                                ": clipper keeps fp32 weights (train.precision "
                                "bf16 is the nearest: bf16 autocast)");
  }
  const std::string dev = str("--device", "cuda");
  if (dev == "cuda" || dev == "cpu" || dev.rfind("cuda:", 0) == 0)
    set("train.device", dev.substr(0, 4) == "cuda" ? std::string("cuda") : dev);
  else
    refuse("--device", "clipper trains on cuda or cpu");
  if (has("--seed")) set("train.seed", integer("--seed", 0));
  if (has("--seed"))
    note(
        "--seed: clipper's random streams are its own, so the same seed gives other init and "
        "sample order than OpenCLIP's");
  const std::string logs = str("--logs", "./logs/");
  set("train.output_dir", logs);
  if (has("--name")) set("train.run_name", str("--name"));
  set("train.log_every", integer("--log-every-n-steps", 100));
}

void Translator::loss() {
  // clipper defaults both to true; OpenCLIP to false.
  set("loss.local_loss", has("--local-loss"));
  set("loss.gather_with_grad", has("--gather-with-grad"));
  if (has("--siglip")) set("loss.kind", std::string("siglip"));
  if (has("--loss-dist-impl")) {
    const std::string impl = str("--loss-dist-impl");
    if (impl == "gather" || impl == "reduce")
      set("loss.siglip_exchange", std::string("gather"));
    else if (impl == "bidir" || impl == "shift")
      set("loss.siglip_exchange", std::string("neighbour"));
    else
      refuse("--loss-dist-impl", "clipper's SigLIP exchanges are gather and neighbour");
    note("--loss-dist-impl: only how SigLIP's blocks travel between ranks; the loss is the same");
  }
}

void Translator::checkpoint() {
  const auto freq = integer("--save-frequency", 1);
  if (freq == 0)
    set("checkpoint.every_steps", std::int64_t{0});
  else if (!epochs_to_steps(freq, "checkpoint.every_steps"))
    by_epoch("--save-frequency", freq, "checkpoint.every_steps");
  if (!has("--save-frequency") && opt_.steps_per_epoch <= 0)
    note(
        "OpenCLIP saves every epoch by default; clipper saves at the end, and every "
        "checkpoint.every_steps steps (give --steps-per-epoch N to set it)");
  // OpenCLIP keeps every epoch's checkpoint unless told to delete the previous one.
  set("checkpoint.keep_last", has("--delete-previous-checkpoint")
                                  ? std::int64_t{1}
                                  : std::max<std::int64_t>(1, integer("--epochs", 32)));
  if (has("--save-most-recent"))
    note(
        "--save-most-recent: clipper's `--resume latest` always finds the newest committed "
        "checkpoint");
  const std::string resume = str("--resume");
  if (resume == "latest")
    set("checkpoint.resume", resume);
  else if (!resume.empty()) {
    set("checkpoint.resume_openclip", resume);
    note("--resume " + resume +
         ": continued at the start of the next epoch (model, AdamW moments and step counts, "
         "epoch; not the data order, which clipper's loader shuffles its own way); add "
         "--resume latest to a restart so that this run's own checkpoints come first");
  }
  if (has("--remote-sync")) {
    if (str("--remote-sync-protocol", "s3") != "s3" || !has("--name"))
      refuse("--remote-sync",
             "clipper's checkpoint.sync_command runs a command per checkpoint: "
             "s3 with --name only (write the command yourself otherwise)");
    else {
      // The flags' text is quoted for /bin/sh, and a '{' in it split from what follows ('{''),
      // so that no {dir} or {name} in a run name reaches expand_sync_command outside quotes.
      const auto quoted = [](const std::string& v) {
        std::string q = "'";
        for (char c : v) q += c == '\'' ? "'\\''" : c == '{' ? "{''" : std::string(1, c);
        return q + "'";
      };
      set("checkpoint.sync_command",
          "aws s3 sync {dir} " +
              quoted(str("--remote-sync") + "/" + str("--name") + "/checkpoints/") + "{name}");
    }
    note(std::string(has("--remote-sync-frequency") ? "--remote-sync-frequency, " : "") +
         "--remote-sync: clipper syncs each committed checkpoint after it is written, not the "
         "whole log folder every --remote-sync-frequency seconds");
  } else {
    refuse("--remote-sync-frequency", "no --remote-sync given");
    refuse("--remote-sync-protocol", "no --remote-sync given");
  }
  const std::int64_t val_freq = integer("--val-frequency", 1);
  if (has("--val-frequency") && !has("--val-data"))
    note("--val-frequency: no --val-data given, nothing to evaluate (as in OpenCLIP)");
  // Only with data to evaluate: eval.every_steps alone would evaluate nothing.
  if (is_set("eval.retrieval_shards") && val_freq > 0)
    by_epoch("--val-frequency", val_freq, "eval.every_steps");
}

void Translator::logging() {
  const std::string report = str("--report-to");
  const bool tb =
      report.find("tensorboard") != std::string::npos || report.find("all") != std::string::npos;
  set("log.tensorboard", tb);
  if (report.find("wandb") != std::string::npos || report.find("all") != std::string::npos)
    out_.not_honoured.push_back("--report-to " + report +
                                ": clipper has no Weights & Biases "
                                "sink (metrics.jsonl and TensorBoard)");
  if (has("--debug")) set("log.level", std::string("debug"));
  if (has("--log-local"))
    note("--log-local: clipper writes every rank's log (logs/rank_R.log) anyway");
}

void Translator::dist() {
  const std::string b = str("--dist-backend");
  if (b == "nccl" || b == "gloo")
    set("dist.backend", b);
  else if (!b.empty())
    refuse("--dist-backend", "clipper's backends are nccl and gloo");
  const std::string url = str("--dist-url");
  if (url.rfind("tcp://", 0) == 0) {
    const std::string hostport = url.substr(6);
    const auto colon = hostport.rfind(':');
    set("dist.master_addr", hostport.substr(0, colon));
    if (colon != std::string::npos)
      set("dist.master_port", std::int64_t{std::atoll(hostport.c_str() + colon + 1)});
  } else if (!url.empty() && url != "env://") {
    refuse("--dist-url", "clipper meets at tcp://HOST:PORT or the environment (env://)");
  }
}

void Translator::not_carried() {
  refuse("--imagenet-val",
         "clipper's zero-shot reads shards with a cls entry and a classes "
         "YAML (eval.zeroshot_shards, eval.zeroshot_classes): convert the "
         "folder with `clipper shards OUT --from-folder DIR --classes FILE`");
  refuse("--imagenet-v2", "as --imagenet-val: convert it to shards (eval.zeroshot_shards)");
  // ImageNet is never carried over, so eval.every_steps is not written for zero-shot alone.
  if (has("--zeroshot-frequency") && has("--imagenet-val") && !is_set("eval.every_steps"))
    check("eval.every_steps: OpenCLIP evaluated zero-shot every " +
          std::to_string(integer("--zeroshot-frequency", 2)) +
          " epoch(s); once eval.zeroshot_shards and eval.zeroshot_classes are set, set it in "
          "steps");
  refuse("--cache-dir", "clipper downloads nothing");
  refuse("--use-bn-sync", "clipper has no SyncBatchNorm: a ResNet tower normalizes per rank");
  refuse("--pretrained-image", "clipper has no timm image towers");
  for (const char* f :
       {"--image-mean", "--image-std", "--image-interpolation", "--image-resize-mode"})
    refuse(f,
           "clipper takes the preprocessing from the model file's preprocess_cfg: copy "
           "configs/models/NAME.yaml with these values and give its path as model.name");
  refuse("--aug-cfg",
         "clipper has no augmentation settings (its training transform is "
         "OpenCLIP's default)");
  refuse("--force-context-length",
         "the context length is the model file's text_cfg."
         "context_length: copy the file with another value");
  refuse("--force-custom-text", "clipper builds OpenCLIP's built-in CLIP text tower only");
  for (const char* f : {"--torchscript", "--trace"})
    refuse(f, "clipper is C++: there is no TorchScript to make");
  refuse("--torchcompile", "no torch.compile in C++ (clipper's step is fused kernels)");
  refuse("--horovod", "clipper's collectives are its own (NCCL / Gloo); no Horovod");
  refuse("--ddp-static-graph", "clipper has no DDP: its own bucketed all-reduce needs no hint");
  refuse("--no-set-device-rank", "clipper always uses device LOCAL_RANK");
  refuse("--copy-codebase",
         "the run folder keeps the effective config.yaml; there is no code "
         "to copy");
  for (const char* f : {"--wandb-notes", "--wandb-project-name"})
    refuse(f, "clipper has no Weights & Biases sink");
  refuse("--use-bnb-linear", "clipper has no bitsandbytes layers");
  if (has("--zeroshot-frequency") && !has("--imagenet-val"))
    note("--zeroshot-frequency: no zero-shot data given, nothing to evaluate (as in OpenCLIP)");
}

void append_section(std::string& out, const std::string& section,
                    const std::vector<std::pair<std::string, Value>>& keys) {
  bool any = false;
  for (const auto& [k, v] : keys) {
    if (k.compare(0, section.size() + 1, section + ".") != 0) continue;
    if (!any) out += section + ":\n";
    any = true;
    out += "  " + k.substr(section.size() + 1) + ": " + value_to_string(v) + "\n";
  }
}

}  // namespace

std::string OpenClipTranslation::yaml() const {
  std::string out =
      "# clipper configuration from OpenCLIP 3.3.0 training flags (clipper config "
      "from-openclip):\n#   " +
      command + "\n";
  if (!not_honoured.empty()) {
    out += "# NOT carried over (clipper cannot honour these):\n";
    for (const auto& n : not_honoured) out += "#   " + n + "\n";
  }
  if (!notes.empty()) {
    out += "# Notes:\n";
    for (const auto& n : notes) out += "#   " + n + "\n";
  }
  for (const char* s :
       {"model", "data", "loss", "optim", "train", "dist", "checkpoint", "eval", "log"})
    append_section(out, s, keys);
  if (!to_check.empty()) {
    out += "# To check before training:\n";
    for (const auto& c : to_check) out += "#   " + c + "\n";
  }
  return out;
}

OpenClipTranslation from_openclip(const std::vector<std::string>& args,
                                  const FromOpenClipOptions& options) {
  Translator t(parse(args), options);
  auto out = t.run();
  out.command = joined(args);
  for (auto& c : out.command)
    if (c == '\n' || c == '\r') c = ' ';
  // What it wrote must load as a clipper configuration (types, choices, bounds).
  Config check;
  apply_yaml(check, out.yaml(), "clipper config from-openclip");
  return out;
}

}  // namespace clipper::config
