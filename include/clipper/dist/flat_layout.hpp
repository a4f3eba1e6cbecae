#pragma once
// The flat layout of the gradient buckets, shared by the reducer, the sharded optimizer (ZeRO)
// and the optimizer's checkpoint shards.
//
// Parameters are laid end to end in buckets of about bucket_mb MB (one dtype and device each, in
// the given order). A bucket's flat buffer is padded with zeros to a multiple of the world size W
// and cut into W equal shards: rank r owns elements [r * S, (r + 1) * S) of every bucket, S =
// padded / W. A shard crosses parameter boundaries; segments() says which pieces of which
// parameters it holds, so per-parameter settings (weight decay, later a learning-rate factor)
// apply per segment.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace clipper::dist {

struct FlatBucket {
  std::vector<std::size_t> params;    // indices into the parameter list, in fill order
  std::vector<std::int64_t> offsets;  // element offset of each parameter in the flat buffer
  std::int64_t numel = 0;             // elements of the parameters
  std::int64_t padded = 0;            // numel rounded up to a multiple of the world size
  at::ScalarType dtype = at::kFloat;
  at::Device device{at::kCPU};
};

// A piece of one parameter inside one rank's shard of one bucket.
struct FlatSegment {
  std::size_t param = 0;          // index into the parameter list
  std::int64_t param_offset = 0;  // first element, in the flattened parameter
  std::int64_t shard_offset = 0;  // where it starts in the shard
  std::int64_t numel = 0;
};

struct FlatLayout {
  int world_size = 1;
  std::vector<FlatBucket> buckets;

  std::int64_t shard_numel(std::size_t bucket) const { return buckets[bucket].padded / world_size; }
  // The pieces of parameters in `rank`'s shard of `bucket`, in flat order.
  std::vector<FlatSegment> segments(std::size_t bucket, int rank) const;
};

// Buckets of at most bucket_mb MB (at least one tensor each) per (dtype, device), tensors taken in
// `order`, padded to a multiple of `world_size` (1: no padding). Bucket indices follow the order
// in which buckets are opened.
FlatLayout make_flat_layout(const std::vector<at::Tensor>& tensors,
                            const std::vector<std::size_t>& order, double bucket_mb,
                            int world_size);

// The reducer's order: last parameter first, the order backward produces gradients.
std::vector<std::size_t> reverse_order(std::size_t n);

}  // namespace clipper::dist
