#include "clipper/eval/precision.hpp"

namespace clipper::eval {
namespace {

struct Setting {
  bool bf16 = false;
  c10::DeviceType device = c10::DeviceType::CPU;
};
thread_local Setting current;

}  // namespace

EvalPrecision::EvalPrecision(bool bf16, c10::DeviceType device)
    : was_bf16_(current.bf16), was_device_(current.device) {
  current = {bf16, device};
}

EvalPrecision::~EvalPrecision() {
  current = {was_bf16_, was_device_};
}

bool eval_in_bf16() {
  return current.bf16;
}

TowerAutocast::TowerAutocast() : guard_(current.bf16, current.device) {}

}  // namespace clipper::eval
