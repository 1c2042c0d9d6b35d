/// @file prune_report.hpp
/// @brief The pieces of surgeon-prune's JSON report that are not flat settings (one entry per shot,
/// one per evaluation text) and its atomic write. The keys and their nesting are what
/// benchmarks/*.py and tests/llama/prune_check.py read.
#pragma once

#include <surgeon/driver/report.hpp>
#include <surgeon/io/detail/file.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "llama/perplexity.hpp"

namespace surgeon::llama {

/// @brief The report's JSON: keys stay in the order they are set (nlohmann::json would sort them),
/// as readers look keys up by name and people read the file top to bottom. Non-finite numbers are
/// written as null; doubles in the shortest form that reads back exactly.
using report_json = nlohmann::ordered_json;

/// @brief One entry of the report's "per_shot": the shot's `shot_report`, its phases under "timings".
inline report_json shot_json(const shot_report& r) {
  report_json timings;
  timings["calibration"] = r.timings.calibration;
  timings["curvature"] = r.timings.curvature;
  timings["costs"] = r.timings.costs;
  timings["selection"] = r.timings.selection;
  timings["update"] = r.timings.update;
  timings["correction"] = r.timings.correction;
  timings["evaluation"] = r.timings.evaluation;
  timings["communication"] = r.timings.communication;
  report_json o;
  o["shot"] = r.shot;
  o["target_sparsity"] = r.target_sparsity;
  o["achieved_sparsity"] = r.achieved_sparsity;
  o["removed"] = r.removed;
  o["seconds"] = r.seconds;
  o["timings"] = std::move(timings);
  o["max_lambda_g"] = r.max_lambda_g;
  o["max_lambda_a"] = r.max_lambda_a;
  o["escalations"] = r.escalations;
  o["update_iterations"] = r.update_iterations;
  o["max_update_residual"] = r.max_update_residual;
  o["correction_steps"] = r.correction_steps;
  o["correction_first_loss"] = r.correction_first_loss;
  o["correction_last_loss"] = r.correction_last_loss;
  o["ppl"] = r.evaluation ? *r.evaluation : std::nan("");
  return o;
}

/// @brief The report's "evaluations": [{"text": path, "tokens": N, "windows": K, "ppl_dense": …,
/// "ppl_pruned": …}, …], one per --eval.
inline report_json evaluations_json(const std::vector<std::string>& paths,
                                    const std::vector<perplexity_result>& dense,
                                    const std::vector<perplexity_result>& pruned) {
  report_json out = report_json::array();
  for (std::size_t k = 0; k < paths.size(); ++k) {
    report_json e;
    e["text"] = paths[k];
    e["tokens"] = dense[k].tokens_total;
    e["windows"] = dense[k].windows;
    e["ppl_dense"] = dense[k].ppl;
    e["ppl_pruned"] = k < pruned.size() ? pruned[k].ppl : std::nan("");
    out.push_back(std::move(e));
  }
  return out;
}

/// @brief Writes `report` to `path`, indented by two, atomically (a reader never sees half a
/// report; a failed write leaves what was there). @throws io_error if it cannot be written.
inline void write_report(const std::string& path, const report_json& report) {
  const std::string text = report.dump(2) + "\n";
  io::detail::write_file_atomically(
      path, [&](auto&& write) { write(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()); });
}

}  // namespace surgeon::llama
