#include "clipper/config/schema.hpp"

#include <algorithm>
#include <cstdio>
#include <unordered_map>

namespace clipper::config {
namespace {

template <class T>
constexpr ValueType type_of() {
  if constexpr (std::is_same_v<T, bool>)
    return ValueType::boolean;
  else if constexpr (std::is_same_v<T, std::int64_t>)
    return ValueType::integer;
  else if constexpr (std::is_same_v<T, double>)
    return ValueType::number;
  else if constexpr (std::is_same_v<T, std::string>)
    return ValueType::string;
  else if constexpr (std::is_same_v<T, std::vector<std::string>>)
    return ValueType::string_list;
  else if constexpr (std::is_same_v<T, std::vector<std::int64_t>>)
    return ValueType::integer_list;
  else
    return ValueType::number_list;
}

class Builder {
 public:
  explicit Builder(std::vector<KeyInfo>& out) : out_(out) {}

  template <class S, class T>
  Builder& add(const char* key, S Config::*section, T S::*field, const char* help) {
    KeyInfo k;
    k.key = key;
    k.type = type_of<T>();
    k.help = help;
    k.set = [section, field](Config& c, const Value& v) { (c.*section).*field = std::get<T>(v); };
    k.get = [section, field](const Config& c) -> Value { return (c.*section).*field; };
    out_.push_back(std::move(k));
    return *this;
  }
  // A key of a section's sub-struct (loss.siglip2.*).
  template <class S, class N, class T>
  Builder& add(const char* key, S Config::*section, N S::*sub, T N::*field, const char* help) {
    KeyInfo k;
    k.key = key;
    k.type = type_of<T>();
    k.help = help;
    k.set = [section, sub, field](Config& c, const Value& v) {
      ((c.*section).*sub).*field = std::get<T>(v);
    };
    k.get = [section, sub, field](const Config& c) -> Value { return ((c.*section).*sub).*field; };
    out_.push_back(std::move(k));
    return *this;
  }
  // A choice key: YAML and --set give its name, the Config holds the enum (Choices<E>).
  template <class S, class E>
  Builder& add_choice(const char* key, S Config::*section, E S::*field, const char* help) {
    KeyInfo k;
    k.key = key;
    k.type = ValueType::string;
    k.help = help;
    for (const auto& [name, value] : Choices<E>::values) k.choices.emplace_back(name);
    k.set = [section, field](Config& c, const Value& v) {
      const auto& s = std::get<std::string>(v);
      for (const auto& [name, value] : Choices<E>::values)
        if (s == name) (c.*section).*field = value;
    };
    k.get = [section, field](const Config& c) -> Value {
      return std::string(name_of((c.*section).*field));
    };
    out_.push_back(std::move(k));
    return *this;
  }
  // A list of choices: YAML and --set give names, the Config holds the enums.
  template <class S, class E>
  Builder& add_choice_list(const char* key, S Config::*section, std::vector<E> S::*field,
                           const char* help) {
    KeyInfo k;
    k.key = key;
    k.type = ValueType::string_list;
    k.help = help;
    for (const auto& [name, value] : Choices<E>::values) k.choices.emplace_back(name);
    k.set = [section, field](Config& c, const Value& v) {
      std::vector<E> out;
      for (const auto& s : std::get<std::vector<std::string>>(v))
        for (const auto& [name, value] : Choices<E>::values)
          if (s == name) out.push_back(value);
      (c.*section).*field = std::move(out);
    };
    k.get = [section, field](const Config& c) -> Value {
      std::vector<std::string> names;
      for (const E e : (c.*section).*field) names.emplace_back(name_of(e));
      return names;
    };
    out_.push_back(std::move(k));
    return *this;
  }
  Builder& choices(std::vector<std::string> c) {
    out_.back().choices = std::move(c);
    return *this;
  }
  Builder& min(double m) {
    out_.back().min = m;
    return *this;
  }
  Builder& max(double m) {
    out_.back().max = m;
    return *this;
  }
  // An upper bound the value must stay below.
  Builder& below(double m) {
    out_.back().max = m;
    out_.back().max_exclusive = true;
    return *this;
  }
  Builder& required() {
    out_.back().required = true;
    return *this;
  }

 private:
  std::vector<KeyInfo>& out_;
};

// loss.siglip2.* (docs/training.md, "SigLIP 2's objective").
void declare_siglip2(Builder& b) {
  using C = Config;
  using L = LossConfig;
  using S = Siglip2Config;
  const auto sub = &L::siglip2;
  b.add("loss.siglip2.locca", &C::loss, sub, &S::locca,
        "SigLIP 2's LocCa decoder loss from the first step: the caption of every sample, "
        "referring expressions and grounded captions on samples with regions (data.regions_key); "
        "needs a model with a decoder and an image tower without attentional pooler");
  b.add("loss.siglip2.silc", &C::loss, sub, &S::silc,
        "SILC self-distillation from loss.siglip2.start_fraction: local views of the student "
        "against the global view of the weight EMA (needs train.ema_decay)");
  b.add("loss.siglip2.masked", &C::loss, sub, &S::masked,
        "masked prediction from loss.siglip2.start_fraction: the student's features at masked "
        "patches against the weight EMA's (needs train.ema_decay, a ViT without attentional "
        "pooler)");
  b.add("loss.siglip2.locca_weight", &C::loss, sub, &S::locca_weight,
        "weight of the LocCa decoder loss (the paper: 1)")
      .min(0.0);
  b.add("loss.siglip2.silc_weight", &C::loss, sub, &S::silc_weight,
        "weight of the SILC term (the paper: 1, times its model-size factor)")
      .min(0.0);
  b.add("loss.siglip2.masked_weight", &C::loss, sub, &S::masked_weight,
        "weight of the masked-prediction term (the paper: 0.25, times its model-size factor)")
      .min(0.0);
  b.add("loss.siglip2.start_fraction", &C::loss, sub, &S::start_fraction,
        "SILC and masked prediction run from this fraction of the steps on (the paper: 0.8)")
      .min(0.0)
      .max(1.0);
  b.add("loss.siglip2.parallel_share", &C::loss, sub, &S::parallel_share,
        "share of the steps whose decoder predicts in parallel (targets masked, full attention)")
      .min(0.0)
      .max(1.0);
  b.add("loss.siglip2.mask_ratio", &C::loss, sub, &S::mask_ratio,
        "share of the student's patches masked for masked prediction")
      .min(0.0)
      .max(1.0);
  b.add("loss.siglip2.local_views", &C::loss, sub, &S::local_views,
        "SILC's local views per picture, cut from the loader's view on the device")
      .min(1);
  b.add("loss.siglip2.head_hidden", &C::loss, sub, &S::head_hidden,
        "hidden width of the distillation heads (DINO: 2048)")
      .min(1);
  b.add("loss.siglip2.head_bottleneck", &C::loss, sub, &S::head_bottleneck,
        "bottleneck width of the distillation heads (DINO: 256)")
      .min(1);
  b.add("loss.siglip2.head_prototypes", &C::loss, sub, &S::head_prototypes,
        "prototypes (outputs) of the distillation heads (DINO: 65536)")
      .min(1);
  b.add("loss.siglip2.box_bins", &C::loss, sub, &S::box_bins,
        "LocCa's box coordinates quantized to this many values, written as text")
      .min(2);
}

std::vector<KeyInfo> declare() {
  std::vector<KeyInfo> v;
  Builder b(v);
  using C = Config;
  // model
  b.add("model.name", &C::model, &ModelConfig::name,
        "architecture name, a file configs/models/<name>.yaml (e.g. ViT-B-32, tiny-vit)")
      .required();
  b.add(
      "model.init_from", &C::model, &ModelConfig::init_from,
      "OpenCLIP-format weights (.safetensors or .pt state dict) to start from; empty: random init");
  b.add("model.patch_dropout", &C::model, &ModelConfig::patch_dropout,
        "fraction of image patches dropped in training (ViT only)")
      .min(0.0);
  b.add("model.grad_checkpointing", &C::model, &ModelConfig::grad_checkpointing,
        "recompute each residual block in backward to save memory");
  b.add("model.lock_image", &C::model, &ModelConfig::lock_image, "freeze the image tower (LiT)");
  b.add("model.lock_image_unlocked_layers", &C::model, &ModelConfig::lock_image_unlocked_layers,
        "with lock_image: the last N layer groups stay trainable")
      .min(0);
  b.add("model.lock_image_freeze_bn_stats", &C::model, &ModelConfig::lock_image_freeze_bn_stats,
        "with lock_image on a ResNet tower: BatchNorm uses and keeps its running statistics "
        "(OpenCLIP's --lock-image-freeze-bn-stats)");
  b.add("model.lock_text", &C::model, &ModelConfig::lock_text, "freeze the text tower");
  b.add("model.lock_text_unlocked_layers", &C::model, &ModelConfig::lock_text_unlocked_layers,
        "with lock_text: the last N layers stay trainable")
      .min(0);
  b.add("model.force_image_size", &C::model, &ModelConfig::force_image_size,
        "override the architecture's image size (OpenCLIP's --force-image-size; ViT weights of "
        "another grid are resized on load); 0: the file's")
      .min(0);
  b.add("model.force_quick_gelu", &C::model, &ModelConfig::force_quick_gelu,
        "QuickGELU whatever the architecture says (OpenCLIP's --force-quick-gelu; OpenAI weights)");
  b.add("model.force_patch_dropout", &C::model, &ModelConfig::force_patch_dropout,
        "override the architecture's patch dropout, 0 included (OpenCLIP's "
        "--force-patch-dropout); negative: the file's");
  // lora
  b.add("lora.rank", &C::lora, &LoraConfig::rank,
        "LoRA rank: > 0 adds low-rank adapters to the targeted linear layers and freezes every "
        "base weight; 0: off (full fine-tune)")
      .min(0);
  b.add("lora.alpha", &C::lora, &LoraConfig::alpha,
        "LoRA alpha: the adapters' output is scaled by alpha / rank")
      .min(0.0);
  b.add("lora.dropout", &C::lora, &LoraConfig::dropout,
        "dropout on each adapter's input, in training")
      .min(0.0)
      .below(1.0);
  b.add_choice_list("lora.targets", &C::lora, &LoraConfig::targets,
                    "linear layers that get adapters: qkv (attention input projections), "
                    "attn_out (attention output projections), mlp_fc, mlp_proj; attn = qkv + "
                    "attn_out, mlp = mlp_fc + mlp_proj, all = every linear layer");
  b.add_choice("lora.towers", &C::lora, &LoraConfig::towers, "towers that get adapters");
  b.add("lora.trainable", &C::lora, &LoraConfig::trainable,
        "parameters left trainable beside the adapters: state-dict names or module prefixes "
        "(e.g. [logit_scale, visual.ln_post]); every other base weight is frozen");
  // data
  b.add("data.train_shards", &C::data, &DataConfig::train_shards,
        "training shards: brace patterns (dir/{00000..00099}.tar), sources joined with '::', "
        "pipe:CMD");
  b.add("data.source_weights", &C::data, &DataConfig::source_weights,
        "sampling weight of each '::' source (resampled mode); empty: equal");
  b.add("data.train_num_samples", &C::data, &DataConfig::train_num_samples,
        "samples per epoch; 0: read sizes.json beside the shards")
      .min(0);
  b.add("data.image_keys", &C::data, &DataConfig::image_keys,
        "file extensions that hold the image, tried in order, ';'-separated");
  b.add("data.text_key", &C::data, &DataConfig::text_key,
        "extension that holds the caption (txt), or json:FIELD for a field of the .json");
  b.add("data.regions_key", &C::data, &DataConfig::regions_key,
        "member whose \"regions\" list (boxes + phrases, docs/data.md \"Regions\") each sample "
        "carries for SigLIP 2's LocCa tasks, e.g. json; empty: regions are not read");
  b.add("data.workers", &C::data, &DataConfig::workers, "loader worker threads per rank").min(1);
  b.add("data.resampled", &C::data, &DataConfig::resampled,
        "draw shards with replacement (source weights apply) instead of splitting them");
  b.add("data.shard_shuffle_buffer", &C::data, &DataConfig::shard_shuffle_buffer,
        "shards shuffled per epoch within a window of this size")
      .min(0);
  b.add("data.sample_shuffle_buffer", &C::data, &DataConfig::sample_shuffle_buffer,
        "sample shuffle buffer size (0: no sample shuffle)")
      .min(0);
  b.add("data.sample_shuffle_initial", &C::data, &DataConfig::sample_shuffle_initial,
        "samples buffered before the first one leaves the shuffle buffer")
      .min(0);
  b.add("data.max_bad_fraction", &C::data, &DataConfig::max_bad_fraction,
        "stop with an error when more than this fraction of samples is bad")
      .min(0.0);
  b.add("data.max_image_pixels", &C::data, &DataConfig::max_image_pixels,
        "images with more pixels are rejected (decompression-bomb guard)")
      .min(1);
  b.add("data.max_sample_bytes", &C::data, &DataConfig::max_sample_bytes,
        "a sample whose files hold more bytes is skipped unread (memory guard)")
      .min(1);
  b.add("data.max_shuffle_buffer_bytes", &C::data, &DataConfig::max_shuffle_buffer_bytes,
        "each worker's sample shuffle buffer holds at most this many bytes (memory guard)")
      .min(1);
  b.add("data.transparency", &C::data, &DataConfig::transparency,
        "transparent pixels: composited over white, black or #RRGGBB, drop (PIL's "
        "convert(\"RGB\") on the decoded picture) or openclip (the alpha dropped after the "
        "crop and resize, as open_clip's preprocess on an RGBA picture)");
  b.add("data.naflex_seq_lens", &C::data, &DataConfig::naflex_seq_lens,
        "NaFlex token-budget batches (timm's --naflex-train-seq-lens): each batch's sequence "
        "length (patches per picture) is drawn from this list and it holds "
        "data.naflex_max_tokens_per_batch / length pictures; empty: train.batch_size pictures "
        "under preprocess_cfg.max_seq_len");
  b.add("data.naflex_max_tokens_per_batch", &C::data, &DataConfig::naflex_max_tokens_per_batch,
        "tokens (patches) per batch per rank with data.naflex_seq_lens; 0: train.batch_size x "
        "the largest length (timm's rule)")
      .min(0);
  // loss
  b.add_choice("loss.kind", &C::loss, &LossConfig::kind, "contrastive loss");
  b.add("loss.local_loss", &C::loss, &LossConfig::local_loss,
        "CLIP: each rank scores its own rows against all columns (OpenCLIP --local-loss)");
  b.add("loss.gather_with_grad", &C::loss, &LossConfig::gather_with_grad,
        "all-gather embeddings with gradient (OpenCLIP --gather-with-grad)");
  b.add("loss.cache_labels", &C::loss, &LossConfig::cache_labels,
        "reuse the label tensor across steps");
  b.add_choice("loss.siglip_exchange", &C::loss, &LossConfig::siglip_exchange,
               "SigLIP: how text blocks travel between ranks");
  b.add("loss.chunked", &C::loss, &LossConfig::chunked,
        "score one peer's B x B block at a time, passed around the ring and recomputed in "
        "backward: loss memory independent of the world size (CLIP needs loss.local_loss)");
  b.add("loss.distill_model", &C::loss, &LossConfig::distill_model,
        "distill from a frozen teacher of this architecture (configs/models/<name>.yaml; "
        "OpenCLIP's --distill-model), with OpenCLIP's DistillClipLoss (loss.kind clip); it sees "
        "the student's images and tokens, so it needs the same image size and tokenizer; "
        "empty: off");
  b.add("loss.distill_from", &C::loss, &LossConfig::distill_from,
        "the teacher's OpenCLIP-format weights (.safetensors or .pt, an export or checkpoint "
        "folder; OpenCLIP's --distill-pretrained); needed with loss.distill_model");
  b.add("loss.coca_clip_weight", &C::loss, &LossConfig::coca_clip_weight,
        "CoCa: weight of the contrastive term (OpenCLIP --coca-contrastive-loss-weight)")
      .min(0.0);
  b.add("loss.coca_caption_weight", &C::loss, &LossConfig::coca_caption_weight,
        "CoCa: weight of the captioning cross-entropy (OpenCLIP --coca-caption-loss-weight)")
      .min(0.0);
  declare_siglip2(b);
  // optim
  b.add("optim.lr", &C::optim, &OptimConfig::lr, "peak learning rate").min(0.0);
  b.add("optim.weight_decay", &C::optim, &OptimConfig::weight_decay,
        "AdamW weight decay (not applied to gains, biases, embeddings, logit_scale)")
      .min(0.0);
  b.add_choice("optim.no_decay", &C::optim, &OptimConfig::no_decay,
               "the parameters weight decay skips: openclip3 (open_clip 3.3.0's main.py: by name, "
               "<2 dims, bn, ln, bias, logit_scale), modern (open_clip main's optim.py: 1-dim "
               "parameters plus the positional and class embeddings), auto (modern with "
               "optim.image_layer_decay or text_layer_decay below 1, else openclip3)");
  b.add("optim.beta1", &C::optim, &OptimConfig::beta1, "AdamW beta1").min(0.0);
  b.add("optim.beta2", &C::optim, &OptimConfig::beta2,
        "AdamW beta2; unset or -1: OpenCLIP's for the model family (a name with 'vit': 0.98, "
        "else 0.999)")
      .min(-1.0);
  b.add("optim.eps", &C::optim, &OptimConfig::eps,
        "AdamW epsilon; unset or -1: OpenCLIP's for the model family (a name with 'vit': 1e-6, "
        "else 1e-8)")
      .min(-1.0);
  b.add("optim.fused", &C::optim, &OptimConfig::fused,
        "fused AdamW kernel (false: PyTorch's multi-tensor AdamW, which reads step counts and "
        "the NaN flag on the host; for comparisons)");
  b.add("optim.warmup_steps", &C::optim, &OptimConfig::warmup_steps, "linear warmup steps").min(0);
  b.add_choice("optim.schedule", &C::optim, &OptimConfig::schedule,
               "learning-rate schedule after warmup");
  b.add("optim.cooldown_steps", &C::optim, &OptimConfig::cooldown_steps,
        "const-cooldown: steps of the final decay")
      .min(0);
  b.add("optim.cooldown_end_lr", &C::optim, &OptimConfig::cooldown_end_lr,
        "const-cooldown: learning rate at the end (OpenCLIP's --lr-cooldown-end)")
      .min(0.0);
  b.add("optim.cooldown_power", &C::optim, &OptimConfig::cooldown_power,
        "const-cooldown: power of the decay, 1: linear (OpenCLIP's --lr-cooldown-power)")
      .min(0.0);
  b.add("optim.image_layer_decay", &C::optim, &OptimConfig::image_layer_decay,
        "layer-wise LR decay of the image tower, in (0, 1]: a layer group d below the head gets "
        "lr * decay^d (OpenCLIP's --image-layer-decay); 1: off")
      .min(0.0);
  b.add("optim.text_layer_decay", &C::optim, &OptimConfig::text_layer_decay,
        "layer-wise LR decay of the text tower, in (0, 1] (OpenCLIP's --text-layer-decay); 1: off")
      .min(0.0);
  b.add("optim.image_lr", &C::optim, &OptimConfig::image_lr,
        "learning-rate multiplier of the image tower (with its layer decay)")
      .min(0.0);
  b.add("optim.text_lr", &C::optim, &OptimConfig::text_lr,
        "learning-rate multiplier of the text tower (with its layer decay)")
      .min(0.0);
  b.add("optim.grad_clip_norm", &C::optim, &OptimConfig::grad_clip_norm,
        "clip the global gradient norm to this value; 0: off")
      .min(0.0);
  // train
  b.add("train.batch_size", &C::train, &TrainConfig::batch_size, "samples per device per step")
      .min(1);
  b.add("train.epochs", &C::train, &TrainConfig::epochs, "epochs to train").min(1);
  b.add("train.max_steps", &C::train, &TrainConfig::max_steps,
        "stop after this many optimizer steps; 0: epochs decide")
      .min(0);
  b.add("train.accum_freq", &C::train, &TrainConfig::accum_freq,
        "micro-batches per step (contrastive-correct accumulation)")
      .min(1);
  b.add_choice(
      "train.precision", &C::train, &TrainConfig::precision,
      "auto: bf16 autocast on CUDA, fp32 on CPU; bf16: autocast on either (on a CPU it pays "
      "with AVX-512 BF16 or AMX)");
  b.add_choice("train.device", &C::train, &TrainConfig::device, "where to train");
  b.add("train.tf32", &C::train, &TrainConfig::tf32, "allow TF32 matmuls on CUDA");
  b.add("train.seed", &C::train, &TrainConfig::seed,
        "seed of every random stream (init, data, dropout)");
  b.add("train.output_dir", &C::train, &TrainConfig::output_dir, "folder that holds run folders");
  b.add("train.run_name", &C::train, &TrainConfig::run_name, "run folder name; empty: a timestamp");
  b.add("train.log_every", &C::train, &TrainConfig::log_every, "steps between metric records")
      .min(1);
  b.add("train.max_wall_time_minutes", &C::train, &TrainConfig::max_wall_time_minutes,
        "save and exit after this long; 0: no limit")
      .min(0.0);
  b.add_choice("train.nan_policy", &C::train, &TrainConfig::nan_policy,
               "on a NaN/Inf loss or gradient: skip the step, or stop");
  b.add("train.max_nan_in_row", &C::train, &TrainConfig::max_nan_in_row,
        "stop after this many skipped steps in a row")
      .min(1);
  b.add("train.threads", &C::train, &TrainConfig::threads,
        "LibTorch intra-op threads on CPU; 0: its default")
      .min(0);
  b.add("train.channels_last", &C::train, &TrainConfig::channels_last,
        "CUDA: keep the ResNet image tower channels-last (NHWC), cuDNN's fastest layout");
  b.add("train.sync_every", &C::train, &TrainConfig::sync_every,
        "read the loss and NaN checks back to the host every this many steps (in between, steps "
        "queue on the device without host waits; NaN steps are still skipped, on the device); "
        "0: train.log_every on CUDA, 1 on CPU")
      .min(0);
  b.add("train.stop_at_step", &C::train, &TrainConfig::stop_at_step,
        "save a checkpoint and exit with code 75 at this step, as a preemption would; 0: off")
      .min(0);
  b.add("train.peak_tflops", &C::train, &TrainConfig::peak_tflops,
        "device peak TFLOP/s for MFU; 0: 790 on CUDA (H200 dense bf16), not reported on CPU")
      .min(0.0);
  b.add("train.ema_decay", &C::train, &TrainConfig::ema_decay,
        "keep an exponential moving average of the weights, ema = decay * ema + (1 - decay) * "
        "weights after each optimizer step (saved in checkpoints; eval.use_ema, clipper export "
        "--ema); 0: off")
      .min(0.0)
      .below(1.0);
  b.add("train.ema_warmup_power", &C::train, &TrainConfig::ema_warmup_power,
        "warm the EMA decay up as timm's ModelEmaV3: update t (0-based) uses min(ema_decay, 1 - "
        "(1 + t)^-power), e.g. 0.75 (short runs) or 0.667 (long); 0: ema_decay from the start")
      .min(0.0);
  // dist
  b.add_choice("dist.backend", &C::dist, &DistConfig::backend, "auto: NCCL on CUDA, Gloo on CPU");
  b.add("dist.master_addr", &C::dist, &DistConfig::master_addr,
        "rendezvous host; empty: MASTER_ADDR / SLURM / 127.0.0.1");
  b.add("dist.master_port", &C::dist, &DistConfig::master_port,
        "rendezvous port; 0: MASTER_PORT or 29500")
      .min(0);
  b.add("dist.start_timeout_s", &C::dist, &DistConfig::start_timeout_s,
        "how long ranks wait for each other at start-up")
      .min(1.0);
  b.add("dist.timeout_s", &C::dist, &DistConfig::timeout_s, "collective timeout after start-up")
      .min(1.0);
  b.add("dist.bucket_mb", &C::dist, &DistConfig::bucket_mb, "gradient all-reduce bucket size (MB)")
      .min(0.0);
  b.add("dist.overlap_grad_reduce", &C::dist, &DistConfig::overlap_grad_reduce,
        "start bucket all-reduces during backward");
  b.add("dist.zero", &C::dist, &DistConfig::zero,
        "optimizer-state sharding (ZeRO): 0 none; 1 AdamW moments sharded across ranks, "
        "gradients reduce-scattered, parameters all-gathered; 2 also frees full gradients once "
        "reduce-scattered; 3 also shards the parameters (each rank keeps 1/world of every "
        "parameter; a unit, a block or a tower's rest, is all-gathered while operations read it)")
      .min(0)
      .max(3);
  b.add_choice("dist.prefetch", &C::dist, &DistConfig::prefetch,
               "dist.zero 3: start the next unit's all-gather while the current unit computes "
               "(one more unit whole at once); auto: on for CUDA, off on CPU");
  b.add("dist.gather_bf16", &C::dist, &DistConfig::gather_bf16,
        "dist.zero 3: all-gather float32 parameters as bfloat16 (half the traffic; forward and "
        "backward then see bf16-rounded weights, the optimizer keeps float32 shards)");
  // checkpoint
  b.add("checkpoint.every_steps", &C::checkpoint, &CheckpointConfig::every_steps,
        "save every N steps; 0: off")
      .min(0);
  b.add("checkpoint.every_minutes", &C::checkpoint, &CheckpointConfig::every_minutes,
        "save every M minutes; 0: off")
      .min(0.0);
  b.add("checkpoint.keep_last", &C::checkpoint, &CheckpointConfig::keep_last,
        "checkpoints kept (older ones deleted)")
      .min(1);
  b.add("checkpoint.resume", &C::checkpoint, &CheckpointConfig::resume,
        "empty: fresh start; latest: the last committed valid checkpoint of the run (with an empty "
        "train.run_name: of the newest run under train.output_dir); or a checkpoint folder");
  b.add("checkpoint.resume_openclip", &C::checkpoint, &CheckpointConfig::resume_openclip,
        "an OpenCLIP training checkpoint (open_clip_train's epoch_N.pt) to continue: its weights, "
        "AdamW moments and step counts, and its epoch (training goes on at the start of the next "
        "epoch; the step count is epochs x steps per epoch); used only when checkpoint.resume "
        "finds no clipper checkpoint (docs/training.md)");
  b.add("checkpoint.save_at_end", &C::checkpoint, &CheckpointConfig::save_at_end,
        "save a checkpoint when training ends");
  b.add("checkpoint.timeout_s", &C::checkpoint, &CheckpointConfig::timeout_s,
        "how long ranks wait for each other inside a checkpoint save or load (rank 0 writes the "
        "model and optimizer); collectives elsewhere use dist.timeout_s")
      .min(1.0);
  b.add("checkpoint.overwrite", &C::checkpoint, &CheckpointConfig::overwrite,
        "start fresh in a run folder that already holds checkpoints (they are set aside in "
        "checkpoints/abandoned/); without it that is an error");
  b.add("checkpoint.async", &C::checkpoint, &CheckpointConfig::async,
        "copy the state to host memory at a save and write it in a background thread while "
        "training goes on; the checkpoint commits at a later step (docs/training.md)");
  b.add("checkpoint.sync_command", &C::checkpoint, &CheckpointConfig::sync_command,
        "shell command run by rank 0 in the background after each commit, {dir} replaced by the "
        "committed folder and {name} by its name (e.g. 'rsync -a {dir} host:run/checkpoints/'); "
        "failures are logged and "
        "counted, never fatal; empty: off");
  b.add("checkpoint.sync_stop_timeout_s", &C::checkpoint, &CheckpointConfig::sync_stop_timeout_s,
        "at a stop (signal, train.stop_at_step, wall-time limit), how long to wait for the "
        "checkpoint.sync_command still running before killing it (its whole process group; "
        "logged as unfinished, the exit code stays 75)")
      .min(0.0);
  // eval
  b.add("eval.every_steps", &C::eval, &EvalConfig::every_steps, "evaluate every N steps; 0: off")
      .min(0);
  b.add("eval.zeroshot_shards", &C::eval, &EvalConfig::zeroshot_shards,
        "shards for zero-shot classification (class index in the cls key)");
  b.add("eval.zeroshot_classes", &C::eval, &EvalConfig::zeroshot_classes,
        "YAML file with classnames and templates for zero-shot classification");
  b.add("eval.retrieval_shards", &C::eval, &EvalConfig::retrieval_shards,
        "shards for image-text retrieval recall@K");
  b.add("eval.suite", &C::eval, &EvalConfig::suite,
        "CLIP_benchmark folders or suite files evaluated with eval.every_steps and at the end, "
        "on every rank (as clipper benchmark; results eval/<folder>/<metric>)");
  b.add("eval.batch_size", &C::eval, &EvalConfig::batch_size, "evaluation batch size").min(1);
  b.add("eval.at_end", &C::eval, &EvalConfig::at_end, "evaluate when training ends");
  b.add("eval.use_ema", &C::eval, &EvalConfig::use_ema,
        "evaluate the weight average: in training, that of train.ema_decay; with clipper eval, a "
        "checkpoint's ema.safetensors");
  // log
  b.add("log.level", &C::log, &LogConfig::level, "console log level")
      .choices({"trace", "debug", "info", "warn", "error", "off"});
  b.add("log.jsonl", &C::log, &LogConfig::jsonl, "write metrics.jsonl in the run folder");
  b.add("log.tensorboard", &C::log, &LogConfig::tensorboard,
        "write TensorBoard event files in the run folder");
  b.add("log.progress_every_s", &C::log, &LogConfig::progress_every_s,
        "seconds between progress lines")
      .min(0.0);
  return v;
}

std::string quote_if_needed(const std::string& s) {
  if (s.empty()) return "\"\"";
  const auto control = [](unsigned char c) { return c < 0x20 || c == 0x7f; };
  const bool plain = s.find_first_of(":#{}[],&*!|>'\"%@`") == std::string::npos &&
                     s.front() != ' ' && s.back() != ' ' && s.front() != '-' &&
                     std::none_of(s.begin(), s.end(), control);
  if (plain) return s;
  std::string out = "\"";
  for (char c : s) {
    if (control(static_cast<unsigned char>(c))) {  // tab, newline, NUL, ...: escaped
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\x%02x",
                    static_cast<unsigned>(static_cast<unsigned char>(c)));
      out += esc;
      continue;
    }
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string number_to_string(double d) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", d);
  // Shortest form that reads back to the same double.
  for (int prec = 1; prec <= 17; ++prec) {
    char b2[64];
    std::snprintf(b2, sizeof b2, "%.*g", prec, d);
    if (std::strtod(b2, nullptr) == d) {
      std::string s(b2);
      if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
      return s;
    }
  }
  return buf;
}

template <class T, class F>
std::string list_to_string(const std::vector<T>& v, F f) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + f(v[i]);
  return out + "]";
}

}  // namespace

const std::vector<KeyInfo>& keys() {
  static const std::vector<KeyInfo> all = declare();
  return all;
}

const KeyInfo* find_key(const std::string& key) {
  static const std::unordered_map<std::string, const KeyInfo*> index = [] {
    std::unordered_map<std::string, const KeyInfo*> m;
    for (const auto& k : keys()) m.emplace(k.key, &k);
    return m;
  }();
  auto it = index.find(key);
  return it == index.end() ? nullptr : it->second;
}

std::string type_name(ValueType type) {
  switch (type) {
    case ValueType::boolean:
      return "bool";
    case ValueType::integer:
      return "int";
    case ValueType::number:
      return "float";
    case ValueType::string:
      return "string";
    case ValueType::string_list:
      return "list of strings";
    case ValueType::integer_list:
      return "list of ints";
    case ValueType::number_list:
      return "list of floats";
  }
  return "?";
}

std::string value_to_string(const Value& value) {
  struct V {
    std::string operator()(bool b) const { return b ? "true" : "false"; }
    std::string operator()(std::int64_t i) const { return std::to_string(i); }
    std::string operator()(double d) const { return number_to_string(d); }
    std::string operator()(const std::string& s) const { return quote_if_needed(s); }
    std::string operator()(const std::vector<std::string>& v) const {
      return list_to_string(v, quote_if_needed);
    }
    std::string operator()(const std::vector<std::int64_t>& v) const {
      return list_to_string(v, [](std::int64_t i) { return std::to_string(i); });
    }
    std::string operator()(const std::vector<double>& v) const {
      return list_to_string(v, number_to_string);
    }
  };
  return std::visit(V{}, value);
}

}  // namespace clipper::config
