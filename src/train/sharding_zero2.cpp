// dist.zero 2: as zero 1 (sharding_zero1.cpp), and each parameter's full gradient is freed as soon
// as it is copied into its bucket, the bucket once it is reduce-scattered.
#include "sharding_zero1.hpp"

namespace clipper::train {
namespace {

class Zero2 : public Zero1 {
 public:
  explicit Zero2(ShardingSetup s) : Zero1(std::move(s), /*free_full_grads=*/true) {}
};

}  // namespace

std::unique_ptr<ParameterSharding> make_zero2(ShardingSetup setup) {
  return std::make_unique<Zero2>(std::move(setup));
}

}  // namespace clipper::train
