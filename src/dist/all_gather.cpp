#include "clipper/dist/all_gather.hpp"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cstdint>

#include "clipper/dist/process_group.hpp"

namespace clipper::dist {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

ProcessGroup& group_of(AutogradContext* ctx) {
  return *reinterpret_cast<ProcessGroup*>(
      static_cast<std::intptr_t>(ctx->saved_data["pg"].toInt()));
}

void remember_group(AutogradContext* ctx, ProcessGroup* pg) {
  ctx->saved_data["pg"] = static_cast<std::int64_t>(reinterpret_cast<std::intptr_t>(pg));
}

struct AllGatherFn : torch::autograd::Function<AllGatherFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, ProcessGroup* pg) {
    remember_group(ctx, pg);
    return pg->all_gather(x, "all_gather (autograd forward)");
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto& pg = group_of(ctx);
    return {pg.reduce_scatter_sum(grads[0], "reduce_scatter (all_gather backward)"), at::Tensor()};
  }
};

struct RingShiftFn : torch::autograd::Function<RingShiftFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, std::int64_t shift,
                            ProcessGroup* pg) {
    remember_group(ctx, pg);
    ctx->saved_data["shift"] = shift;
    return pg->ring_shift(x, static_cast<int>(shift), "ring_shift (autograd forward)");
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto& pg = group_of(ctx);
    const auto shift = ctx->saved_data["shift"].toInt();
    return {pg.ring_shift(grads[0], static_cast<int>(-shift), "ring_shift (autograd backward)"),
            at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor all_gather_with_grad(const at::Tensor& x, ProcessGroup& pg) {
  if (pg.size() == 1) return x;
  return AllGatherFn::apply(x, &pg);
}

at::Tensor all_gather_no_grad(const at::Tensor& x, ProcessGroup& pg) {
  if (pg.size() == 1) return x.detach();
  return pg.all_gather(x.detach());
}

at::Tensor ring_shift_with_grad(const at::Tensor& x, int shift, ProcessGroup& pg) {
  if (pg.size() == 1) return x;
  return RingShiftFn::apply(x, static_cast<std::int64_t>(shift), &pg);
}

namespace {

at::Tensor gather_rows(const at::Tensor& x, ProcessGroup& pg, std::vector<std::int64_t>* counts,
                       bool with_grad) {
  const std::int64_t n = x.size(0);
  if (pg.size() == 1) {
    *counts = {n};
    return with_grad ? x : x.detach();
  }
  const auto sizes =
      pg.all_gather(at::full({1}, n, at::TensorOptions().dtype(at::kLong).device(pg.device())),
                    "row counts")
          .cpu();
  counts->assign(sizes.data_ptr<std::int64_t>(), sizes.data_ptr<std::int64_t>() + pg.size());
  const std::int64_t most = *std::max_element(counts->begin(), counts->end());
  auto shape = x.sizes().vec();
  shape[0] = most - n;
  const at::Tensor padded = n == most ? x : at::cat({x, at::zeros(shape, x.options())});
  const at::Tensor all =
      with_grad ? all_gather_with_grad(padded, pg) : all_gather_no_grad(padded, pg);
  std::vector<at::Tensor> parts;
  for (int r = 0; r < pg.size(); ++r)
    parts.push_back(all.narrow(0, r * most, (*counts)[static_cast<std::size_t>(r)]));
  return at::cat(parts);
}

}  // namespace

at::Tensor all_gather_rows_with_grad(const at::Tensor& x, ProcessGroup& pg,
                                     std::vector<std::int64_t>* counts) {
  return gather_rows(x, pg, counts, true);
}

at::Tensor all_gather_rows_no_grad(const at::Tensor& x, ProcessGroup& pg,
                                   std::vector<std::int64_t>* counts) {
  return gather_rows(x, pg, counts, false);
}

}  // namespace clipper::dist
