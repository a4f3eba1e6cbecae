#include "chunked_loss.hpp"

#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/autograd.h>

#include <cstdint>
#include <vector>

#include "clipper/dist/process_group.hpp"

namespace clipper::loss::detail {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::ScalarType compute_type(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

void remember(AutogradContext* ctx, dist::ProcessGroup* pg, const at::Tensor& img,
              const at::Tensor& scale) {
  ctx->saved_data["pg"] = static_cast<std::int64_t>(reinterpret_cast<std::intptr_t>(pg));
  ctx->saved_data["dtype"] = static_cast<std::int64_t>(img.scalar_type());
  ctx->saved_data["scale_dtype"] = static_cast<std::int64_t>(scale.scalar_type());
  ctx->saved_data["scale_shape"] = scale.sizes().vec();
}

dist::ProcessGroup& group_of(AutogradContext* ctx) {
  return *reinterpret_cast<dist::ProcessGroup*>(
      static_cast<std::intptr_t>(ctx->saved_data["pg"].toInt()));
}

at::ScalarType saved_type(AutogradContext* ctx, const char* key) {
  return static_cast<at::ScalarType>(ctx->saved_data[key].toInt());
}

// The scale's gradient in the scale's own dtype and shape.
at::Tensor as_scale(AutogradContext* ctx, const at::Tensor& ds) {
  return ds.to(saved_type(ctx, "scale_dtype"))
      .reshape(ctx->saved_data["scale_shape"].toIntVector());
}

// f(src, block) sees every rank's block once: this rank's own first, then those of rank - 1,
// rank - 2, ... (one ring shift each).
template <class F>
void visit_ring(const at::Tensor& mine, dist::ProcessGroup& pg, const char* what, F&& f) {
  const int w = pg.size(), r = pg.rank();
  at::Tensor block = mine;
  for (int k = 0; k < w; ++k) {
    if (k > 0) block = pg.ring_shift(block, 1, what);
    f((r - k + w) % w, block);
  }
}

// As visit_ring for the block made of `parts` side by side, with an accumulator for the block's
// gradient that travels with it in the same message: f(src, block, grad) adds to grad. After the
// last hop one more shift brings every accumulator home; returned: the gradient every rank sent
// to this rank's block. Block and accumulator are views of the one buffer that is sent on, so a
// hop holds two such buffers (the one sent and the one received).
template <class F>
at::Tensor visit_ring_with_grad(const std::vector<at::Tensor>& parts, dist::ProcessGroup& pg,
                                const char* what, F&& f) {
  const int w = pg.size(), r = pg.rank();
  std::int64_t p = 0;
  for (const auto& t : parts) p += t.size(1);
  at::Tensor both = at::empty({parts.at(0).size(0), 2 * p}, parts[0].options());
  std::int64_t col = 0;
  for (const auto& t : parts) {
    both.narrow(1, col, t.size(1)).copy_(t);
    col += t.size(1);
  }
  both.narrow(1, p, p).zero_();
  at::Tensor block, grad;
  for (int k = 0; k < w; ++k) {
    if (k > 0) both = pg.ring_shift(both, 1, what);
    block = both.narrow(1, 0, p);
    grad = both.narrow(1, p, p);
    f((r - k + w) % w, block, grad);
  }
  return w > 1 ? pg.ring_shift(grad, 1, what) : grad;
}

struct ChunkedClipFn : torch::autograd::Function<ChunkedClipFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& img, const at::Tensor& txt,
                            const at::Tensor& scale, dist::ProcessGroup* pg,
                            bool columns_with_grad) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const auto ct = compute_type(img);
    const at::Tensor I = img.to(ct), T = txt.to(ct), s = scale.to(ct).reshape({});
    const std::int64_t b = I.size(0), d = I.size(1);
    // Row i's log-sum-exp over each rank's block; combined over the blocks below.
    at::Tensor lse_i = at::empty({pg->size(), b}, I.options()), lse_t = at::empty_like(lse_i);
    visit_ring(at::cat({I, T}, 1), *pg, "chunked clip loss (forward)",
               [&](int src, const at::Tensor& blk) {
                 lse_i[src].copy_(at::logsumexp(s * I.matmul(blk.narrow(1, d, d).t()), 1));
                 lse_t[src].copy_(at::logsumexp(s * T.matmul(blk.narrow(1, 0, d).t()), 1));
               });
    const at::Tensor row_i = at::logsumexp(lse_i, 0), row_t = at::logsumexp(lse_t, 0);
    const at::Tensor diag = s * (I * T).sum(1);
    remember(ctx, pg, img, scale);
    ctx->saved_data["columns"] = columns_with_grad;
    ctx->save_for_backward({I, T, s, row_i, row_t});
    return ((row_i - diag).mean() + (row_t - diag).mean()) / 2;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &I = saved[0], &T = saved[1], &s = saved[2];
    auto& pg = group_of(ctx);
    const std::int64_t b = I.size(0), d = I.size(1);
    const at::Tensor c = grads[0].to(I.scalar_type()).reshape({}) / (2.0 * b);
    at::Tensor dI = at::zeros_like(I), dT = at::zeros_like(T), ds = at::zeros({}, I.options());
    // Rows R against the block's columns C: (softmax - target) * c, recomputed.
    auto direction = [&](const at::Tensor& R, const at::Tensor& C, const at::Tensor& lse, bool own,
                         at::Tensor& dR, at::Tensor dC) {
      const at::Tensor raw = R.matmul(C.t());
      at::Tensor p = at::exp(s * raw - lse.unsqueeze(1));
      if (own) p.diagonal().sub_(1);
      p.mul_(c);
      dR.add_(s * p.matmul(C));
      ds.add_((p * raw).sum());
      if (dC.defined()) dC.add_(s * p.t().matmul(R));
    };
    auto block = [&](int src, const at::Tensor& blk, const at::Tensor& g) {
      const bool own = src == pg.rank(), cols = g.defined();
      direction(I, blk.narrow(1, d, d), saved[3], own, dI, cols ? g.narrow(1, d, d) : at::Tensor());
      direction(T, blk.narrow(1, 0, d), saved[4], own, dT, cols ? g.narrow(1, 0, d) : at::Tensor());
    };
    const char* what = "chunked clip loss (backward)";
    if (ctx->saved_data["columns"].toBool()) {
      const at::Tensor back = visit_ring_with_grad({I, T}, pg, what, block);
      dI.add_(back.narrow(1, 0, d));
      dT.add_(back.narrow(1, d, d));
    } else {
      visit_ring(at::cat({I, T}, 1), pg, what,
                 [&](int src, const at::Tensor& blk) { block(src, blk, {}); });
    }
    const auto dt = saved_type(ctx, "dtype");
    return {dI.to(dt), dT.to(dt), as_scale(ctx, ds), at::Tensor(), at::Tensor()};
  }
};

struct ChunkedSigLipFn : torch::autograd::Function<ChunkedSigLipFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& img, const at::Tensor& txt,
                            const at::Tensor& scale, const at::Tensor& bias,
                            dist::ProcessGroup* pg) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const auto ct = compute_type(img);
    const at::Tensor I = img.to(ct), T = txt.to(ct), s = scale.to(ct).reshape({}),
                     bb = bias.to(ct).reshape({});
    const double b = static_cast<double>(I.size(0));
    at::Tensor loss = at::zeros({}, I.options());
    visit_ring(T, *pg, "chunked siglip loss (forward)", [&](int src, const at::Tensor& blk) {
      // labels * logits: -1 everywhere but the own block's diagonal.
      at::Tensor y = -(s * I.matmul(blk.t()) + bb);
      if (src == pg->rank()) y.diagonal().neg_();
      loss = loss + -at::log_sigmoid(y).sum() / b;
    });
    remember(ctx, pg, img, scale);
    ctx->saved_data["bias_dtype"] = static_cast<std::int64_t>(bias.scalar_type());
    ctx->saved_data["bias_shape"] = bias.sizes().vec();
    ctx->save_for_backward({I, T, s, bb});
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &I = saved[0], &T = saved[1], &s = saved[2], &bb = saved[3];
    auto& pg = group_of(ctx);
    const at::Tensor c = grads[0].to(I.scalar_type()).reshape({}) / static_cast<double>(I.size(0));
    at::Tensor dI = at::zeros_like(I), ds = at::zeros({}, I.options()), db = at::zeros_like(ds);
    const at::Tensor dT =
        visit_ring_with_grad({T}, pg, "chunked siglip loss (backward)",
                             [&](int src, const at::Tensor& blk, const at::Tensor& g) {
                               const at::Tensor raw = I.matmul(blk.t());
                               // d/dz of -logsigmoid(label * z) is sigmoid(z) - [label == +1].
                               at::Tensor dz = at::sigmoid(s * raw + bb);
                               if (src == pg.rank()) dz.diagonal().sub_(1);
                               dz.mul_(c);
                               dI.add_(s * dz.matmul(blk));
                               g.add_(s * dz.t().matmul(I));
                               ds.add_((dz * raw).sum());
                               db.add_(dz.sum());
                             });
    const auto dt = saved_type(ctx, "dtype");
    const at::Tensor dbias =
        db.to(saved_type(ctx, "bias_dtype")).reshape(ctx->saved_data["bias_shape"].toIntVector());
    return {dI.to(dt), dT.to(dt), as_scale(ctx, ds), dbias, at::Tensor()};
  }
};

}  // namespace

at::Tensor chunked_clip_loss(const at::Tensor& img, const at::Tensor& txt, const at::Tensor& scale,
                             dist::ProcessGroup& pg, bool columns_with_grad) {
  return ChunkedClipFn::apply(img, txt, scale, &pg, columns_with_grad);
}

at::Tensor chunked_siglip_loss(const at::Tensor& img, const at::Tensor& txt,
                               const at::Tensor& scale, const at::Tensor& bias,
                               dist::ProcessGroup& pg) {
  return ChunkedSigLipFn::apply(img, txt, scale, bias, &pg);
}

}  // namespace clipper::loss::detail
