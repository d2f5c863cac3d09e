#include "cli/factory_views.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace kiln::cli {

Json outcome_json(const ProvisionOutcome& o) {
  Json out{{"board", o.board}, {"uid", o.uid}, {"result", std::string(board_status_name(o.result))}};
  if (!o.certificate_serial.empty()) out["serial"] = o.certificate_serial;
  if (!o.planned_steps.empty()) out["would_run"] = fmt::format("{}", fmt::join(o.planned_steps, ","));
  if (!o.failed_step.empty()) out["failed_step"] = o.failed_step;
  if (!o.error.empty()) out["error"] = o.error;
  out["duration_ms"] = o.duration_ms;
  return out;
}

Json event_json(const ProvisionEvent& e) {
  Json out{{"board", e.board}, {"uid", e.uid}, {"step", e.step}, {"result", std::string(step_status_name(e.result))}, {"duration_ms", e.duration_ms}};
  if (!e.error.empty()) out["error"] = e.error;
  return out;
}

std::string event_table_line(const ProvisionEvent& e) {
  return fmt::format("{:<12} {:<15} {:<10} {}", e.uid.empty() ? "?" : e.uid, e.step, step_status_name(e.result), e.error.substr(0, 60));
}

Json profile_json(const std::string& path, const StationProfile& p) {
  return {{"profile", path},
          {"product", p.product},
          {"identity", std::string(identity_mode_name(p.identity))},
          {"final_state", std::string(manufacturing_state_name(p.final_state))},
          {"quota", p.quota ? Json(*p.quota) : Json(nullptr)},
          {"ledger", p.ledger.string()},
          {"firmware", p.firmware ? Json(p.firmware->image.string()) : Json(nullptr)},
          {"profile_hash", profile_hash(path)}};
}

Json ledger_verify_json(const std::filesystem::path& ledger, const LedgerVerifyReport& r) {
  Json out{{"ledger", ledger.string()},
           {"ok", r.ok},
           {"rows", r.rows},
           {"units", r.units},
           {"checkpoints", r.checkpoints},
           {"unsealed_rows", r.unsealed_rows},
           {"unverified_rows", r.unverified_rows},
           {"head_verified", r.head_verified},
           {"reprovisions", r.reprovisions}};
  if (!r.ledger_id.empty()) out["ledger_id"] = r.ledger_id;
  if (r.bad_row) out["bad_row"] = *r.bad_row;
  if (!r.ok) out["problem"] = r.problem;
  return out;
}

Json ledger_stats_json(const LedgerStats& s, const std::optional<std::int64_t>& quota) {
  Json failures = Json::object();
  for (const auto& entry : s.failures_per_step) failures[entry.first] = entry.second;
  return {{"attempts", s.attempts},
          {"failed_attempts", s.failed_attempts},
          {"units_attempted", s.units_attempted},
          {"units_provisioned", s.units_provisioned},
          {"yield", s.yield},
          {"units_per_hour", s.units_per_hour},
          {"certificates_issued", s.certificates_issued},
          {"certificates_reserved", s.certificates_reserved},
          {"quota", quota ? Json(*quota) : Json(nullptr)},
          {"failures_per_step", failures}};
}

}  // namespace kiln::cli
