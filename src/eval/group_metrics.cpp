// DataComp's group metrics (iWildCam, FMoW, Dollar Street, GeoDE): docs/evaluation.md, "Suites
// and DataComp".
#include "clipper/eval/group_metrics.hpp"

#include <ATen/ATen.h>

#include <algorithm>

#include "clipper/core/error.hpp"
#include "clipper/eval/metrics.hpp"

namespace clipper::eval {

GroupEval parse_group_eval(const std::string& key, const std::string& where) {
  if (key.empty() || key == "none") return GroupEval::none;
  if (key == "wilds/iwildcam") return GroupEval::iwildcam;
  if (key == "wilds/fmow") return GroupEval::fmow;
  if (key == "fairness/dollar_street") return GroupEval::dollar_street;
  if (key == "fairness/geode") return GroupEval::geode;
  throw core::InputError(where + ": unknown evaluator '" + key + "' (DataComp's task keys: " +
                         "wilds/iwildcam, wilds/fmow, fairness/dollar_street, fairness/geode)");
}

const char* to_string(GroupEval e) {
  switch (e) {
    case GroupEval::none:
      return "none";
    case GroupEval::iwildcam:
      return "wilds/iwildcam";
    case GroupEval::fmow:
      return "wilds/fmow";
    case GroupEval::dollar_street:
      return "fairness/dollar_street";
    case GroupEval::geode:
      return "fairness/geode";
  }
  return "?";
}

const std::vector<std::string>& metadata_fields(GroupEval e) {
  static const std::vector<std::string> none, fmow{"region", "year", "y"},
      dollar{"income_ds", "income_meta", "region"}, geode{"region", "country"};
  switch (e) {
    case GroupEval::fmow:
      return fmow;
    case GroupEval::dollar_street:
      return dollar;
    case GroupEval::geode:
      return geode;
    default:
      return none;
  }
}

const std::vector<std::string>& group_fields(GroupEval e) {
  static const std::vector<std::string> none, region_year{"region", "year"}, income{"income_ds"},
      region{"region"};
  switch (e) {
    case GroupEval::fmow:
      return region_year;
    case GroupEval::dollar_street:
      return income;
    case GroupEval::geode:
      return region;
    default:
      return none;
  }
}

namespace {

// The group indices of `field` (a column of the metadata rows).
at::Tensor column(GroupEval e, const at::Tensor& metadata, const std::string& field) {
  const auto& f = metadata_fields(e);
  const auto i = std::find(f.begin(), f.end(), field) - f.begin();
  return metadata.select(1, i).to(at::kLong);
}

// WILDS's standard_group_eval entries for one grouping: NAME_FIELD:G and count_FIELD:G for every
// group 0..max, and the worst group's value under `worst_key`.
void add_groups(nlohmann::ordered_json& m, const std::string& name, const std::string& field,
                const GroupMeans& g, const std::string& worst_key) {
  for (std::size_t i = 0; i < g.mean.size(); ++i) {
    m[name + "_" + field + ":" + std::to_string(i)] = g.mean[i];
    m["count_" + field + ":" + std::to_string(i)] = g.count[i];
  }
  m[worst_key] = g.worst;
}

}  // namespace

nlohmann::ordered_json group_metrics(GroupEval e, const at::Tensor& logits,
                                     const at::Tensor& target, const at::Tensor& metadata) {
  nlohmann::ordered_json m;
  if (e == GroupEval::none) return m;
  if (e != GroupEval::iwildcam &&
      (metadata.dim() != 2 || metadata.size(0) != target.size(0) ||
       metadata.size(1) < static_cast<std::int64_t>(metadata_fields(e).size())))
    throw core::InputError(std::string(to_string(e)) + ": the metadata rows do not match the " +
                           "samples");
  const auto top1 = top_k_hits(logits, target, 1);
  switch (e) {
    case GroupEval::iwildcam: {
      const auto predicted = std::get<1>(at::sort(logits, true, 1, true)).select(1, 0);
      m["acc_avg"] = top1.mean().item<double>();
      // WILDS's Recall(average="macro") over the classes present: balanced accuracy.
      m["recall-macro_all"] = classification_metrics(logits, target).mean_per_class_recall;
      m["F1-macro_all"] = macro_f1(predicted, target);
      break;
    }
    case GroupEval::fmow:
      m["acc_avg"] = top1.mean().item<double>();
      add_groups(m, "acc", "year", group_means(top1, column(e, metadata, "year")),
                 "acc_worst_year");
      add_groups(m, "acc", "region", group_means(top1, column(e, metadata, "region")),
                 "acc_worst_region");
      break;
    case GroupEval::dollar_street: {
      const auto top5 = top_k_hits(logits, target, 5);
      m["acc_top5_avg"] = top5.mean().item<double>();
      add_groups(m, "acc_top5", "income_ds", group_means(top5, column(e, metadata, "income_ds")),
                 "acc_top5_wg");
      break;
    }
    case GroupEval::geode:
      m["acc_avg"] = top1.mean().item<double>();
      add_groups(m, "acc", "region", group_means(top1, column(e, metadata, "region")), "acc_wg");
      break;
    case GroupEval::none:
      break;
  }
  return m;
}

}  // namespace clipper::eval
