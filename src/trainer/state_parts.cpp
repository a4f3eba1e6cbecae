#include "clipper/trainer/state_parts.hpp"

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>

#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/data/loader.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/optim/adamw.hpp"
#include "clipper/train/ema.hpp"
#include "clipper/train/siglip2_step.hpp"
#include "clipper/train/step.hpp"

namespace clipper::trainer {
namespace {

void require(bool ok, const std::string& where, const std::string& what) {
  if (!ok) throw core::InputError("checkpoint '" + where + "': " + what);
}

// The names model.json lists as saved per rank instead (dist.zero 3), as the model part read them.
using ShardedNames = std::shared_ptr<std::vector<std::string>>;

// Copies the saved tensors into the model; those the file lacks must be listed as sharded.
void load_all_but_sharded(model::ClipImpl& model, const checkpoint::TensorList& tensors,
                          const std::vector<std::string>& sharded, const std::string& where) {
  std::map<std::string, at::Tensor> target;
  for (const auto& [name, t] : model.state_dict()) target.emplace(name, t);
  std::set<std::string> have;
  at::NoGradGuard no_grad;
  for (const auto& [name, t] : tensors) {
    const auto it = target.find(name);
    require(it != target.end(), where, "model.safetensors holds '" + name + "', not in this model");
    require(it->second.sizes() == t.sizes(), where,
            "model.safetensors' '" + name + "' has shape " + io::shape_text(t.sizes()) +
                ", the model " + io::shape_text(it->second.sizes()));
    it->second.copy_(t);
    have.insert(name);
  }
  have.insert(sharded.begin(), sharded.end());
  for (const auto& [name, t] : target)
    require(have.count(name), where,
            "neither model.safetensors nor the parameter shards hold '" + name + "'");
}

// The model's state dict (OpenCLIP names). With dist.zero 3 the trainable parameters are left out
// and listed in model.json: each rank saves its shards of them (ParamShardsPart).
class ModelPart : public checkpoint::Stateful {
 public:
  ModelPart(model::Clip model, train::TrainStep& step, ShardedNames sharded)
      : model_(std::move(model)), step_(step), sharded_(std::move(sharded)) {}
  // The weights where they live: an asynchronous save copies them once, to pinned memory without
  // waiting; a synchronous one when it writes. (io::model_state_dict would first make a blocking
  // device-to-host copy, which the async save then copied again.)
  checkpoint::PartState state() const override {
    const auto& names = step_.sharded_parameter_names();
    const std::set<std::string> skip(names.begin(), names.end());
    checkpoint::PartState s;
    for (const auto& [name, t] : model_->state_dict())
      if (!skip.count(name)) s.tensors.emplace_back(name, t.detach());
    if (names.empty()) return s;
    // The shapes too: `clipper export` and `eval` assemble the parameters without a model.
    nlohmann::json shapes = nlohmann::json::array();
    const auto params = model_->named_parameters();
    for (const auto& n : names) shapes.push_back(params[n].sizes().vec());
    s.json = {{"sharded_parameters", names}, {"sharded_shapes", shapes}};
    return s;
  }
  void load_state(const checkpoint::PartState& s, const std::string& where) override {
    sharded_->clear();
    if (s.json.is_object() && s.json.contains("sharded_parameters")) {
      *sharded_ = s.json["sharded_parameters"].get<std::vector<std::string>>();
      return load_all_but_sharded(*model_, s.tensors, *sharded_, where);
    }
    require(!s.tensors.empty(), where, "holds no model weights (model.safetensors)");
    io::load_state_dict(*model_, s.tensors, where + "/model.safetensors");
  }

 private:
  model::Clip model_;
  train::TrainStep& step_;
  ShardedNames sharded_;
};

// dist.zero 3: this rank's shards of the trainable parameters, in the optimizer's flat-shard form
// (key "param"). Loading fills the whole parameters the model part found listed (the model is
// whole until the first step) from the shards of any world size; any stage resumes it.
class ParamShardsPart : public checkpoint::Stateful {
 public:
  ParamShardsPart(model::Clip model, train::TrainStep& step, ShardedNames sharded)
      : model_(std::move(model)), step_(step), sharded_(std::move(sharded)) {}
  checkpoint::PartState state() const override {
    auto shards = step_.parameter_shards();
    if (!shards) return {};
    return {std::move(shards->tensors), std::move(shards->json)};
  }
  void load_state(const checkpoint::PartState&, const std::string& where) override {
    throw core::Error("checkpoint '" + where + "': the parameter shards load through load_ranks");
  }
  void load_ranks(const checkpoint::SavedRanks& saved, int, int,
                  const std::string& where) override {
    if (sharded_->empty()) return;  // model.safetensors held every parameter
    optim::SavedFlatShards s;
    for (int r = 0; r < saved.world_size(); ++r) s.json.push_back(saved.json(r));
    s.tensors = [&saved](int r) { return saved.read(r).tensors; };
    s.where = where;
    require(!s.json.empty() && !s.json[0].is_null(), where,
            "model.json lists sharded parameters, but rank_00000.json holds no parameter shards");
    auto params = model_->named_parameters();
    std::vector<at::Tensor> whole;
    for (const auto& name : *sharded_) {
      auto* p = params.find(name);
      require(p != nullptr, where, "the parameter shards hold '" + name + "', not in this model");
      whole.push_back(*p);
    }
    optim::load_whole_from_flat_shards(s, "param", *sharded_, whole);
  }

 private:
  model::Clip model_;
  train::TrainStep& step_;
  ShardedNames sharded_;
};

// Each rank writes its own flat shard; loading reads the saved ranks whose shards overlap this
// rank's (all of them for zero 0, which holds everything), whatever world size wrote them.
class OptimizerPart : public checkpoint::Stateful {
 public:
  explicit OptimizerPart(train::TrainStep& s) : step_(s) {}
  checkpoint::PartState state() const override {
    auto shards = step_.optimizer_shards();
    return {std::move(shards.tensors), std::move(shards.json)};
  }
  void load_state(const checkpoint::PartState&, const std::string& where) override {
    throw core::Error("checkpoint '" + where + "': the optimizer loads through load_ranks");
  }
  void load_ranks(const checkpoint::SavedRanks& saved, int, int,
                  const std::string& where) override {
    optim::SavedFlatShards s;
    for (int r = 0; r < saved.world_size(); ++r) s.json.push_back(saved.json(r));
    s.tensors = [&saved](int r) { return saved.read(r).tensors; };
    s.where = where;
    require(!s.json.empty() && !s.json[0].is_null(), where,
            "holds no optimizer shard in rank_00000.json (a checkpoint of an older format)");
    step_.load_optimizer_shards(s);
  }

 private:
  train::TrainStep& step_;
};

// The average of what every rank holds whole is the same on every rank, so rank 0 writes it once;
// with dist.zero 3 that is the buffers' average, and ema.json lists the parameters whose average
// each rank saves as shards (EmaShardsPart). A checkpoint without an average (EMA turned on at a
// resume) restarts it at the resumed weights.
class EmaPart : public checkpoint::Stateful {
 public:
  EmaPart(train::WeightEma& e, ShardedNames sharded) : ema_(e), sharded_(std::move(sharded)) {}
  checkpoint::PartState state() const override {
    const auto& o = ema_.options();
    nlohmann::json j = {
        {"updates", ema_.updates()}, {"decay", o.decay}, {"warmup_power", o.warmup_power}};
    const auto names = ema_.sharded_names();
    if (!names.empty()) j["sharded_parameters"] = names;
    return {ema_.named(), j};
  }
  void load_state(const checkpoint::PartState& s, const std::string& where) override {
    sharded_->clear();
    if (s.tensors.empty() && s.json.is_null()) {
      CLIPPER_WARN("checkpoint '" << where
                                  << "' holds no weight average (ema.safetensors): it starts "
                                     "again from the resumed weights");
      ema_.reset_to_model();
      return;
    }
    require(
        s.json.is_object() && s.json.contains("updates") && s.json["updates"].is_number_integer(),
        where, "ema.json has no integer update count");
    if (s.json.contains("sharded_parameters"))
      *sharded_ = s.json["sharded_parameters"].get<std::vector<std::string>>();
    ema_.load(s.tensors, *sharded_, "checkpoint '" + where + "/ema.safetensors'");
    ema_.set_updates(s.json["updates"].get<std::int64_t>());
  }

 private:
  train::WeightEma& ema_;
  ShardedNames sharded_;
};

// dist.zero 3: this rank's shards of the parameters' average, in the flat-shard form (key "ema").
// Loading fills the averages ema.json listed from the shards of any world size, into shards or
// whole averages, whatever the stage.
class EmaShardsPart : public checkpoint::Stateful {
 public:
  EmaShardsPart(train::WeightEma& e, ShardedNames sharded)
      : ema_(e), sharded_(std::move(sharded)) {}
  checkpoint::PartState state() const override {
    auto shards = ema_.shards();
    if (!shards) return {};
    return {std::move(shards->tensors), std::move(shards->json)};
  }
  void load_state(const checkpoint::PartState&, const std::string& where) override {
    throw core::Error("checkpoint '" + where + "': the average's shards load through load_ranks");
  }
  void load_ranks(const checkpoint::SavedRanks& saved, int, int,
                  const std::string& where) override {
    if (sharded_->empty()) return;  // ema.safetensors held every average
    optim::SavedFlatShards s;
    for (int r = 0; r < saved.world_size(); ++r) s.json.push_back(saved.json(r));
    s.tensors = [&saved](int r) { return saved.read(r).tensors; };
    s.where = where;
    require(!s.json.empty() && !s.json[0].is_null(), where,
            "ema.json lists averages saved as shards, but rank_00000.json holds none");
    ema_.load_shards(s, *sharded_);
  }

 private:
  train::WeightEma& ema_;
  ShardedNames sharded_;
};

// This rank's random streams (the loader keeps its own in its state).
class RngPart : public checkpoint::Stateful {
 public:
  explicit RngPart(at::Device device) : device_(device) {}
  checkpoint::PartState state() const override {
    checkpoint::PartState s;
    s.tensors.emplace_back("cpu_rng", at::detail::getDefaultCPUGenerator().get_state());
    if (device_.is_cuda()) s.tensors.emplace_back("cuda_rng", cuda().get_state());
    return s;
  }
  // Another world size: a rank that has a saved state takes it, a new rank keeps its own.
  void load_ranks(const checkpoint::SavedRanks& saved, int rank, int,
                  const std::string& where) override {
    if (rank < saved.world_size()) load_state(saved.read(rank), where);
  }
  void load_state(const checkpoint::PartState& s, const std::string&) override {
    for (const auto& [name, value] : s.tensors) {
      if (name == "cpu_rng") {
        at::Generator gen = at::detail::getDefaultCPUGenerator();  // a handle to the global one
        gen.set_state(value);
      }
      if (name == "cuda_rng" && device_.is_cuda()) {
        at::Generator gen = cuda();
        gen.set_state(value);
      }
    }
  }

 private:
  at::Generator cuda() const { return at::globalContext().defaultGenerator(device_); }
  at::Device device_;
};

class LoaderPart : public checkpoint::Stateful {
 public:
  explicit LoaderPart(data::Loader& l) : loader_(l) {}
  checkpoint::PartState state() const override { return {{}, loader_.state()}; }
  void load_state(const checkpoint::PartState& s, const std::string& where) override {
    require(!s.json.is_null(), where, "holds no loader position for this rank");
    try {
      loader_.load_state(s.json);
    } catch (const core::InputError& e) {
      throw core::InputError("checkpoint '" + where + "': " + e.what());
    }
  }
  // Another world size, worker count or batch size: the loader re-splits the rest of the saved
  // epoch from every saved rank's position (docs/data.md); its refusals name the checkpoint.
  void load_ranks(const checkpoint::SavedRanks& saved, int rank, int world_size,
                  const std::string& where) override {
    if (saved.world_size() == world_size) {
      const auto own = saved.json(rank);
      if (own.is_object() && own.contains("workers") && own.contains("samples_per_epoch") &&
          own["workers"] == loader_.options().workers &&
          own["samples_per_epoch"] == loader_.samples_per_epoch())
        return load_state({{}, own}, where);
    }
    std::vector<nlohmann::json> all;
    for (int r = 0; r < saved.world_size(); ++r) {
      all.push_back(saved.json(r));
      require(!all.back().is_null(), where,
              "holds no loader position for rank " + std::to_string(r));
    }
    try {
      loader_.load_states(all);
    } catch (const core::InputError& e) {
      throw core::InputError("checkpoint '" + where + "': " + e.what());
    }
  }

 private:
  data::Loader& loader_;
};

}  // namespace

std::string StepLayout::text() const {
  return std::to_string(world_size) + " rank(s) x batch " + std::to_string(batch_size) +
         " x accum_freq " + std::to_string(accum_freq);
}

checkpoint::PartState TrainerCounters::state() const {
  checkpoint::PartState s;
  s.json = {{"step", global_step},
            {"total_steps", total_steps},
            {"nan_total", nan_total},
            {"nan_in_row", step ? step->nan_in_row() : 0},
            {"dropped_batches", dropped_batches},
            {"world_size", layout.world_size},
            {"batch_size", layout.batch_size},
            {"accum_freq", layout.accum_freq},
            {"model", model_name}};
  return s;
}

void TrainerCounters::load_state(const checkpoint::PartState& s, const std::string& where) {
  require(s.json.is_object() && s.json.contains("step") && s.json["step"].is_number_integer(),
          where, "trainer.json has no integer step");
  global_step = s.json["step"].get<std::int64_t>();
  nan_total = s.json.value("nan_total", std::int64_t{0});
  dropped_batches = s.json.value("dropped_batches", std::int64_t{0});
  saved_total_steps = s.json.value("total_steps", std::int64_t{0});
  saved_layout = {s.json.value("world_size", layout.world_size),
                  s.json.value("batch_size", layout.batch_size),
                  s.json.value("accum_freq", layout.accum_freq)};
  if (step) step->set_nan_in_row(s.json.value("nan_in_row", std::int64_t{0}));
}

ModelParts make_model_parts(model::Clip model, train::TrainStep& step) {
  auto sharded = std::make_shared<std::vector<std::string>>();
  return {std::make_unique<ModelPart>(model, step, sharded),
          std::make_unique<ParamShardsPart>(model, step, sharded)};
}
std::unique_ptr<checkpoint::Stateful> make_optimizer_part(train::TrainStep& step) {
  return std::make_unique<OptimizerPart>(step);
}
EmaParts make_ema_parts(train::WeightEma& ema) {
  auto sharded = std::make_shared<std::vector<std::string>>();
  return {std::make_unique<EmaPart>(ema, sharded), std::make_unique<EmaShardsPart>(ema, sharded)};
}
std::unique_ptr<checkpoint::Stateful> make_rng_part(at::Device device) {
  return std::make_unique<RngPart>(device);
}
namespace {

class Siglip2Part : public checkpoint::Stateful {
 public:
  explicit Siglip2Part(train::Siglip2Step& s) : s_(s) {}
  checkpoint::PartState state() const override { return {s_.state(), nullptr}; }
  void load_state(const checkpoint::PartState& st, const std::string& where) override {
    s_.load_state(st.tensors, where);
  }

 private:
  train::Siglip2Step& s_;
};

}  // namespace

std::unique_ptr<checkpoint::Stateful> make_siglip2_part(train::Siglip2Step& siglip2) {
  return std::make_unique<Siglip2Part>(siglip2);
}

std::unique_ptr<checkpoint::Stateful> make_loader_part(data::Loader& loader) {
  return std::make_unique<LoaderPart>(loader);
}

}  // namespace clipper::trainer
