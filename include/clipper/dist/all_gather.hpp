#pragma once
// Collectives that autograd can differentiate through.
//
//   all_gather_with_grad(x, pg): every rank's x ([n, ...], same shape everywhere) concatenated
//     along dim 0 in rank order. Backward: this rank's slice of the gradient summed over ranks
//     (a reduce-scatter), so a loss computed on every rank from the gathered tensor sends each
//     rank's share of the gradient back to the rank that owns the rows.
//   ring_shift_with_grad(x, shift, pg): the x of rank (rank - shift) mod size. Backward sends the
//     gradient the other way.
//
// Every rank must call them in the same order, and run backward through them in the same order
// (true when every rank builds the same graph). With one process both return x itself.
#include <ATen/core/Tensor.h>

namespace clipper::dist {

class ProcessGroup;

at::Tensor all_gather_with_grad(const at::Tensor& x, ProcessGroup& pg);
// Without autograd: the gathered values, detached.
at::Tensor all_gather_no_grad(const at::Tensor& x, ProcessGroup& pg);
at::Tensor ring_shift_with_grad(const at::Tensor& x, int shift, ProcessGroup& pg);

}  // namespace clipper::dist
