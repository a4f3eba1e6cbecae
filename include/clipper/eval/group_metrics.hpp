#pragma once
// DataComp's metrics for the tasks whose main metric needs groups or more than top-1/top-5, as its
// eval_utils (wilds_eval.py, fairness_eval.py, on WILDS 2.0's metrics) compute them. Each sample's
// groups come from the .npy entry DataComp's webdataset folders hold beside the .cls: a row of
// integers, the fields in the order its evaluator names them (metadata_fields).
#include <ATen/core/Tensor.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "clipper/eval/benchmark_dataset.hpp"

namespace clipper::eval {

// The .npy row's fields as DataComp's evaluator names them (empty: the evaluator reads none):
// fmow [region, year, y], dollar_street [income_ds, income_meta, region], geode [region, country].
const std::vector<std::string>& metadata_fields(GroupEval e);
// The fields that are group indices (checked on reading: integers >= 0).
const std::vector<std::string>& group_fields(GroupEval e);

// The metrics DataComp adds, from the split's `logits` [N, C], `target` [N] and `metadata`
// [N, fields] (float, integral group columns), named as DataComp writes them:
//   iwildcam       acc_avg, recall-macro_all, F1-macro_all
//   fmow           acc_avg, acc_year:Y, count_year:Y, acc_worst_year, acc_region:R,
//                  count_region:R, acc_worst_region
//   dollar_street  acc_top5_avg, acc_top5_income_ds:G, count_income_ds:G, acc_top5_wg
//   geode          acc_avg, acc_region:R, count_region:R, acc_wg
// Groups run 0..the largest index present (an empty one: 0 and count 0); a worst group is the
// lowest over the groups with samples.
nlohmann::ordered_json group_metrics(GroupEval e, const at::Tensor& logits,
                                     const at::Tensor& target, const at::Tensor& metadata);

}  // namespace clipper::eval
