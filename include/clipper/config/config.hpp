#pragma once
// The typed run configuration. Each field is declared once more, with its key, help text and
// allowed values, in src/config/schema.cpp; the default is the initializer written here.
// Precedence: these defaults < YAML files (later files win) < --set overrides.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace clipper::config {

// Choice keys are parsed once, by the schema, into these enums; code compares enums, never strings.
enum class Device { automatic, cpu, cuda };
enum class Precision { automatic, fp32, bf16 };
enum class NanPolicy { skip, stop };
enum class LossKind { clip, siglip };
enum class SiglipExchange { gather, neighbour };
enum class LrSchedule { cosine, constant, const_cooldown };
enum class Backend { automatic, nccl, gloo };
enum class Prefetch { automatic, on, off };
// Which parameters AdamW does not decay (optim.no_decay; optim/param_groups.hpp).
enum class NoDecay { automatic, openclip3, modern };
// LoRA: which linear layers get adapters (model/lora.hpp), and in which towers.
enum class LoraTarget { qkv, attn_out, mlp_fc, mlp_proj, attn, mlp, all };
enum class LoraTowers { both, image, text };

// The spelling of each choice in YAML, --set and messages (the schema's allowed values).
template <class E>
struct Choices;
#define CLIPPER_CHOICES(E, ...)                                          \
  template <>                                                            \
  struct Choices<E> {                                                    \
    static constexpr std::pair<const char*, E> values[] = {__VA_ARGS__}; \
  }
CLIPPER_CHOICES(Device, {"auto", Device::automatic}, {"cpu", Device::cpu}, {"cuda", Device::cuda});
CLIPPER_CHOICES(Precision, {"auto", Precision::automatic}, {"fp32", Precision::fp32},
                {"bf16", Precision::bf16});
CLIPPER_CHOICES(NanPolicy, {"skip", NanPolicy::skip}, {"stop", NanPolicy::stop});
CLIPPER_CHOICES(LossKind, {"clip", LossKind::clip}, {"siglip", LossKind::siglip});
CLIPPER_CHOICES(SiglipExchange, {"gather", SiglipExchange::gather},
                {"neighbour", SiglipExchange::neighbour});
CLIPPER_CHOICES(LrSchedule, {"cosine", LrSchedule::cosine}, {"const", LrSchedule::constant},
                {"const-cooldown", LrSchedule::const_cooldown});
CLIPPER_CHOICES(Backend, {"auto", Backend::automatic}, {"nccl", Backend::nccl},
                {"gloo", Backend::gloo});
CLIPPER_CHOICES(Prefetch, {"auto", Prefetch::automatic}, {"on", Prefetch::on},
                {"off", Prefetch::off});
CLIPPER_CHOICES(NoDecay, {"auto", NoDecay::automatic}, {"openclip3", NoDecay::openclip3},
                {"modern", NoDecay::modern});
CLIPPER_CHOICES(LoraTarget, {"qkv", LoraTarget::qkv}, {"attn_out", LoraTarget::attn_out},
                {"mlp_fc", LoraTarget::mlp_fc}, {"mlp_proj", LoraTarget::mlp_proj},
                {"attn", LoraTarget::attn}, {"mlp", LoraTarget::mlp}, {"all", LoraTarget::all});
CLIPPER_CHOICES(LoraTowers, {"both", LoraTowers::both}, {"image", LoraTowers::image},
                {"text", LoraTowers::text});
#undef CLIPPER_CHOICES

// "cuda" for Device::cuda: the name a user writes.
template <class E>
constexpr const char* name_of(E e) {
  for (const auto& [name, value] : Choices<E>::values)
    if (value == e) return name;
  return "?";
}

// The enum named `name` (for code outside the schema, e.g. tests and command-line flags).
template <class E>
E parse_choice(const std::string& name) {
  for (const auto& [n, value] : Choices<E>::values)
    if (name == n) return value;
  throw std::invalid_argument("'" + name + "' is not a valid choice");
}

struct ModelConfig {
  std::string name;       // architecture from configs/models/<name>.yaml (required)
  std::string init_from;  // OpenCLIP-format weights to start from
  double patch_dropout = 0.0;
  bool grad_checkpointing = false;
  bool lock_image = false;
  std::int64_t lock_image_unlocked_layers = 0;
  bool lock_image_freeze_bn_stats = false;  // with lock_image: BatchNorm statistics too
  bool lock_text = false;
  std::int64_t lock_text_unlocked_layers = 0;
  // Overrides of the architecture file (OpenCLIP's --force-image-size, --force-quick-gelu,
  // --force-patch-dropout): 0 / false / negative keep the file's value.
  std::int64_t force_image_size = 0;
  bool force_quick_gelu = false;
  double force_patch_dropout = -1.0;
};

// Fine-tuning with low-rank adapters (docs/training.md, "Fine-tuning with LoRA"): rank > 0 turns
// it on; base weights are frozen, only the adapters (and `trainable`) learn.
struct LoraConfig {
  std::int64_t rank = 0;  // 0: off
  double alpha = 16.0;    // the adapters' output is scaled by alpha / rank
  double dropout = 0.0;   // on each adapter's input, in training
  std::vector<LoraTarget> targets{LoraTarget::attn, LoraTarget::mlp};
  LoraTowers towers = LoraTowers::both;
  std::vector<std::string> trainable;  // parameter names / module prefixes left trainable
};

struct DataConfig {
  std::string train_shards;  // brace patterns, sources joined with '::', pipe:CMD
  std::vector<double> source_weights;
  std::int64_t train_num_samples = 0;  // 0: from sizes.json
  std::string image_keys = "jpg;png;jpeg;webp";
  std::string text_key = "txt";
  std::string regions_key;  // e.g. "json": the member with SigLIP 2's "regions"; empty: not read
  std::int64_t workers = 2;
  bool resampled = false;
  std::int64_t shard_shuffle_buffer = 2000;
  std::int64_t sample_shuffle_buffer = 5000;
  std::int64_t sample_shuffle_initial = 1000;
  double max_bad_fraction = 0.01;
  std::int64_t max_image_pixels = 89478485;
  std::int64_t max_sample_bytes = std::int64_t{256} << 20;        // one sample's files together
  std::int64_t max_shuffle_buffer_bytes = std::int64_t{2} << 30;  // per worker
  std::string transparency = "white";                             // white | black | #RRGGBB | drop
  // NaFlex token-budget batches (docs/data.md): each batch's sequence length drawn from this list
  // and its picture count max_tokens_per_batch / length; empty: train.batch_size pictures under
  // the model's preprocess_cfg.max_seq_len.
  std::vector<std::int64_t> naflex_seq_lens;
  std::int64_t naflex_max_tokens_per_batch = 0;  // per rank; 0: batch_size * max(seq_lens)
};

// SigLIP 2's terms on top of the contrastive loss (docs/training.md, "SigLIP 2's objective"):
// the LocCa decoder loss from the first step, SILC self-distillation and masked prediction from
// start_fraction of training, against the weight EMA (train.ema_decay) as teacher. All switches
// off: plain training.
struct Siglip2Config {
  bool locca = false;         // the decoder loss: captions; referring expressions and grounded
                              // captions on samples with regions (data.regions_key)
  bool silc = false;          // local views of the student against the teacher's global view
  bool masked = false;        // the student's masked patches against the teacher's
  double locca_weight = 1.0;  // the paper's weights (SigLIP 2, sec. 2.2-2.3)
  double silc_weight = 1.0;
  double masked_weight = 0.25;
  double start_fraction = 0.8;      // SILC and masked prediction from this fraction of the steps
  double parallel_share = 0.5;      // share of steps with parallel prediction (LocCa / CapPa)
  double mask_ratio = 0.5;          // share of the student's patches masked
  std::int64_t local_views = 8;     // SILC's local views per picture
  std::int64_t head_hidden = 2048;  // the distillation heads (DINO's sizes)
  std::int64_t head_bottleneck = 256;
  std::int64_t head_prototypes = 65536;
  std::int64_t box_bins = 500;  // box coordinates quantized to this many values
  bool any() const { return locca || silc || masked; }
  bool distills() const { return silc || masked; }
};

struct LossConfig {
  LossKind kind = LossKind::clip;
  bool local_loss = true;
  bool gather_with_grad = true;
  bool cache_labels = true;
  SiglipExchange siglip_exchange = SiglipExchange::gather;
  // Peer blocks one at a time around the ring, recomputed in backward (src/loss/chunked_loss.hpp).
  bool chunked = false;
  // Distillation (OpenCLIP's --distill-model / --distill-pretrained): a frozen teacher's
  // architecture (configs/models) and its OpenCLIP-format weights; both empty: off.
  std::string distill_model;
  std::string distill_from;
  // CoCa models (a multimodal_cfg): open_clip's CoCaLoss, clip_weight * the contrastive loss +
  // caption_weight * the captioning cross-entropy (open_clip's --coca-contrastive-loss-weight
  // and --coca-caption-loss-weight, same defaults).
  double coca_clip_weight = 1.0;
  double coca_caption_weight = 2.0;
  Siglip2Config siglip2;
};

struct OptimConfig {
  double lr = 5e-4;
  double weight_decay = 0.2;
  // The parameters weight decay skips. openclip3: open_clip 3.3.0's main.py, by name (fewer than
  // 2 dims, "bn", "ln", "bias" or "logit_scale" in the name); modern: open_clip main's
  // open_clip_train/optim.py, 1-dim parameters plus the model's no_weight_decay() set (the
  // positional embeddings, the class embedding); auto: modern with layer decay, else openclip3.
  NoDecay no_decay = NoDecay::automatic;
  double beta1 = 0.9;
  // < 0: OpenCLIP's default for model.name's family (config::resolve_model_defaults)
  double beta2 = -1;
  double eps = -1;
  bool fused = true;  // one fused AdamW kernel per group; false: PyTorch's foreach AdamW
  std::int64_t warmup_steps = 0;
  LrSchedule schedule = LrSchedule::cosine;
  std::int64_t cooldown_steps = 0;
  double cooldown_end_lr = 0.0;
  double cooldown_power = 1.0;  // const-cooldown: 1 linear, else (1 - progress)^power
  double grad_clip_norm = 0.0;  // 0: off
  // Layer-wise learning-rate decay per tower: a layer group d groups below the tower's head gets
  // lr * decay^d (OpenCLIP's --image-layer-decay / --text-layer-decay); 1: off.
  double image_layer_decay = 1.0;
  double text_layer_decay = 1.0;
  // Per-tower learning-rate multipliers, on top of the layer decay (logit_scale/bias keep 1).
  double image_lr = 1.0;
  double text_lr = 1.0;
};

struct TrainConfig {
  std::int64_t batch_size = 64;  // per device
  std::int64_t epochs = 1;
  std::int64_t max_steps = 0;  // 0: epochs decide
  std::int64_t accum_freq = 1;
  Precision precision = Precision::automatic;
  Device device = Device::automatic;
  bool tf32 = true;
  std::int64_t seed = 0;
  std::string output_dir = "runs";
  std::string run_name;  // empty: a timestamp
  std::int64_t log_every = 10;
  double max_wall_time_minutes = 0.0;  // 0: no limit
  NanPolicy nan_policy = NanPolicy::skip;
  std::int64_t max_nan_in_row = 5;
  std::int64_t threads = 0;       // intra-op threads on CPU; 0: LibTorch's default
  bool channels_last = true;      // CUDA: ResNet tower weights and activations NHWC
  std::int64_t sync_every = 0;    // host reads of loss / NaN checks; 0: log_every on CUDA, 1 on CPU
  std::int64_t stop_at_step = 0;  // save and exit (as a preemption would) at this step; 0: off
  double peak_tflops = 0.0;       // device peak for MFU; 0: 790 on CUDA (H200 bf16), none on CPU
  double ema_decay = 0.0;         // weight EMA after each optimizer step, in [0, 1); 0: off
  double ema_warmup_power = 0.0;  // decay_t = min(ema_decay, 1 - (1 + t)^-power); 0: no warmup
};

struct DistConfig {
  Backend backend = Backend::automatic;
  std::string master_addr;       // empty: from the environment
  std::int64_t master_port = 0;  // 0: from the environment
  double start_timeout_s = 1800.0;
  double timeout_s = 600.0;
  double bucket_mb = 25.0;
  bool overlap_grad_reduce = true;
  // ZeRO stage: 0 (replicated), 1 (sharded optimizer state), 2 (+ sharded gradients) or 3 (+
  // sharded parameters: full sharding, docs/distributed.md)
  std::int64_t zero = 0;
  // dist.zero 3: gather the next unit while the current one computes (auto: on for CUDA), and
  // gather float parameters in bf16 (half the bytes; the step then computes with rounded weights)
  Prefetch prefetch = Prefetch::automatic;
  bool gather_bf16 = false;
};

struct CheckpointConfig {
  std::int64_t every_steps = 0;
  double every_minutes = 0.0;
  std::int64_t keep_last = 3;
  std::string resume;           // empty | latest | PATH
  std::string resume_openclip;  // an open_clip_train epoch_N.pt to continue (no clipper checkpoint)
  bool save_at_end = true;
  double timeout_s = 1800.0;  // collectives inside a save or a load
  bool overwrite = false;     // start fresh in a run folder that holds checkpoints
  bool async = false;         // snapshot to host memory, write in the background
  std::string sync_command;   // run by rank 0 after each commit; {dir}: the committed folder
  double sync_stop_timeout_s = 300.0;  // a stop waits at most this long for the sync, then kills it
};

struct EvalConfig {
  std::int64_t every_steps = 0;
  std::string zeroshot_shards;
  std::string zeroshot_classes;  // YAML file with class names and templates
  std::string retrieval_shards;
  // CLIP_benchmark folders and suite files (`clipper benchmark --suite`), run on every rank.
  std::vector<std::string> suite;
  std::int64_t batch_size = 256;
  bool at_end = true;
  bool use_ema = false;  // evaluate the weight average (train.ema_decay) instead of the weights
};

struct LogConfig {
  std::string level = "info";
  bool jsonl = true;
  bool tensorboard = true;
  double progress_every_s = 5.0;
};

struct Config {
  ModelConfig model;
  LoraConfig lora;
  DataConfig data;
  LossConfig loss;
  OptimConfig optim;
  TrainConfig train;
  DistConfig dist;
  CheckpointConfig checkpoint;
  EvalConfig eval;
  LogConfig log;
};

}  // namespace clipper::config
