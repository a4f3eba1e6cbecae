// dist.zero 0: every rank holds the whole parameters, gradients and AdamW state. The gradients are
// all-reduced in flat buckets (dist/grad_reducer.hpp); the checkpoint shards are cut from the whole
// moments with the layout the sharded stages would use, so any stage resumes them.
#include <ATen/ATen.h>

#include "clipper/dist/grad_reducer.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/train/sharding.hpp"

namespace clipper::train {
namespace {

// The groups' parameters in group order: the order of the norms the gradient norm sums.
std::vector<at::Tensor> in_group_order(const std::vector<optim::ParamGroup>& groups) {
  std::vector<at::Tensor> out;
  for (const auto& g : groups) out.insert(out.end(), g.params.begin(), g.params.end());
  return out;
}

class Replicated : public ParameterSharding {
 public:
  explicit Replicated(ShardingSetup s)
      : pg_(s.pg),
        params_(in_group_order(s.groups)),
        names_(std::move(s.names)),
        reducer_(s.params, s.pg, dist::reducer_options(s.bucket_mb, s.overlap)),
        optimizer_(std::move(s.groups), s.adamw),
        layout_(dist::make_flat_layout(s.params, dist::reverse_order(s.params.size()), s.bucket_mb,
                                       s.pg->size())) {}

  void begin_backward() override { reducer_.begin_step(); }
  void finish_backward() override { reducer_.finish(); }
  std::vector<at::Tensor> gradients() const override {
    std::vector<at::Tensor> grads;
    for (const auto& p : params_)
      if (p.grad().defined()) grads.push_back(p.grad());
    return grads;
  }
  // Every rank has the same norm: the mean of the ranks' norms is it.
  at::Tensor norm_term(const at::Tensor& norms) const override {
    return at::linalg_vector_norm(norms, 2).to(at::kDouble);
  }
  at::Tensor global_norm(const at::Tensor& summed) const override {
    return summed.div(static_cast<double>(pg_->size()));
  }
  void step(double lr, const at::Tensor& found_inf) override { optimizer_.step(lr, found_inf); }

  optim::FlatShards optimizer_shards() const override {
    return optim::to_flat_shards(optimizer_, layout_, pg_->rank(), names_);
  }
  void load_optimizer_shards(const optim::SavedFlatShards& saved) override {
    optim::load_flat_shards(optimizer_, saved);
  }
  std::int64_t optimizer_state_bytes() const override {
    std::int64_t n = 0;
    for (const auto& [name, t] : optimizer_.state()) n += static_cast<std::int64_t>(t.nbytes());
    return n;
  }
  std::int64_t peak_parameter_bytes() const override { return bytes_of(params_); }
  std::int64_t peak_gradient_bytes() const override { return reducer_.peak_gradient_bytes(); }
  const dist::FlatLayout& layout() const override { return layout_; }
  optim::AdamW* whole_optimizer() override { return &optimizer_; }

 private:
  std::shared_ptr<dist::ProcessGroup> pg_;
  std::vector<at::Tensor> params_;
  std::vector<std::string> names_;
  dist::GradReducer reducer_;
  optim::AdamW optimizer_;
  dist::FlatLayout layout_;
};

}  // namespace

std::unique_ptr<ParameterSharding> make_replicated(ShardingSetup setup) {
  return std::make_unique<Replicated>(std::move(setup));
}

}  // namespace clipper::train
