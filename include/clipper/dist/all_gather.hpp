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

#include <cstdint>
#include <vector>

namespace clipper::dist {

class ProcessGroup;

at::Tensor all_gather_with_grad(const at::Tensor& x, ProcessGroup& pg);
// Without autograd: the gathered values, detached.
at::Tensor all_gather_no_grad(const at::Tensor& x, ProcessGroup& pg);
at::Tensor ring_shift_with_grad(const at::Tensor& x, int shift, ProcessGroup& pg);
// Ranks with different row counts (NaFlex batches by token budget): the counts are all-gathered
// first (one small collective), each rank's rows padded to the largest count and all-gathered
// (with or without gradient), the padding dropped: every rank's rows in rank order, and in
// `counts` each rank's row count.
at::Tensor all_gather_rows_with_grad(const at::Tensor& x, ProcessGroup& pg,
                                     std::vector<std::int64_t>* counts);
at::Tensor all_gather_rows_no_grad(const at::Tensor& x, ProcessGroup& pg,
                                   std::vector<std::int64_t>* counts);

}  // namespace clipper::dist
