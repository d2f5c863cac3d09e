#include "cli/deployment_views.hpp"

#include <algorithm>
#include <sstream>

#include <fmt/format.h>

#include "core/deployment_states.hpp"
#include "transport/deployment_options.hpp"

namespace kiln::cli {
namespace {

using transport::duration_text;
using transport::percent_text;

std::string rate_text(const Json& v) {
  if (!v.is_object()) return {};
  auto out = fmt::format("{}/min", v["base_per_minute"].get<std::int64_t>());
  if (v["factor"].get<double>() > 1)
    out += fmt::format(", x{} each {} devices {}", v["factor"].get<double>(), v["every"].get<std::int64_t>(),
                       v["increase_on"].get<std::string>());
  if (v["max_per_minute"].is_number()) out += fmt::format(", at most {}/min", v["max_per_minute"].get<std::int64_t>());
  return out;
}

// "2 (once 5 devices finished)"-like texts of the controls for the table view; empty when unset.
std::string wave_success_text(const Json& v) {
  if (!v.is_object()) return {};
  return fmt::format("{} of a wave installed, then {}", percent_text(v["percent"].get<double>()),
                     v["then"] == "pause" ? "pause for a resume" : "open the next wave");
}
std::string wave_error_text(const Json& v) {
  if (!v.is_object()) return {};
  if (v.contains("count")) return fmt::format("halt above {} failed devices in a wave", v["count"].get<std::int64_t>());
  return fmt::format("halt above {} of a wave failed", percent_text(v["percent"].get<double>()));
}
std::string timeouts_text(const Json& v) {
  std::string out;
  if (!v.is_object()) return out;
  for (auto& [phase, seconds] : v.items())
    out += fmt::format("{}{} {}", out.empty() ? "" : ", ", phase, duration_text(seconds.get<std::int64_t>()));
  return out.empty() ? out : out + " (then timed_out, a failure)";
}
std::string retry_text(const Json& v) {
  if (!v.is_object()) return {};
  return fmt::format("{} retries of transient failures, after {} doubling to at most {}", v["retries"].get<std::int64_t>(),
                     duration_text(v["backoff_seconds"].get<std::int64_t>()),
                     duration_text(v["backoff_max_seconds"].get<std::int64_t>()));
}
// "Mon-Fri 01:00-04:00, Sat 10:00-12:00 (Europe/Berlin)"; empty without windows.
std::string windows_text(const Json& schedule) {
  if (!schedule.is_object() || !schedule.contains("windows") || schedule["windows"].empty()) return {};
  std::string out;
  for (auto& w : schedule["windows"]) out += (out.empty() ? "" : ", ") + w.get<std::string>();
  return fmt::format("{} ({})", out, schedule.value("time_zone", std::string("UTC")));
}
std::string abort_criteria_text(const Json& v) {
  std::string out;
  if (!v.is_array()) return out;
  for (auto& c : v)
    out += fmt::format("{}{} above {} (once {} executed)", out.empty() ? "" : ", ", c["kind"].get<std::string>(),
                       percent_text(c["percent"].get<double>()), c["min_executed"].get<std::int64_t>());
  return out;
}

}  // namespace

std::string dry_run_text(const Json& plan, const RenderOptions& options) {
  Json s = Json::object();
  s["would_create"] = plan["would_create"].get<bool>() ? "yes" : "no";
  s["group"] = plan["group"];
  if (plan.contains("trust_version") && !plan["trust_version"].is_null())
    s["carries"] = fmt::format("trust update, version {}", plan["trust_version"].get<std::int64_t>());
  s["devices"] = plan["devices"];
  std::string waves;
  for (auto& w : plan["waves"])
    waves += fmt::format("{}wave {} ({}%): {} devices", waves.empty() ? "" : ", ", w["wave"].get<int>(),
                         w["percent"].get<int>(), w["devices"].size());
  s["waves"] = waves;
  auto& r = plan["rollout"];
  s["halt_on_failure"] = r["halt_on_failure"].is_number()
                             ? Json(fmt::format("{} (once {} devices finished)",
                                                percent_text(r["halt_on_failure"].get<double>()),
                                                r["halt_min_executed"].get<std::int64_t>()))
                             : Json("never");
  if (auto t = wave_success_text(r.value("wave_success", Json())); !t.empty()) s["wave_success"] = t;
  if (auto t = wave_error_text(r.value("wave_error", Json())); !t.empty()) s["wave_error"] = t;
  if (auto t = abort_criteria_text(r.value("abort_criteria", Json())); !t.empty()) s["abort_criteria"] = t;
  if (auto t = timeouts_text(r.value("timeouts", Json())); !t.empty()) s["timeouts"] = t;
  if (auto t = rate_text(r.value("rate", Json())); !t.empty()) s["rate"] = t;
  if (auto t = retry_text(r.value("retry", Json())); !t.empty()) s["retry"] = t;
  if (auto t = windows_text(r.value("schedule", Json())); !t.empty()) s["windows"] = t;
  std::ostringstream out;
  cli::render(out, s, options);
  out << "\n";
  Json rows = Json::array();
  for (auto& c : plan["checks"])
    rows.push_back(Json{{"check", c["check"]}, {"result", c["passed"].get<bool>() ? "passed" : "FAILED"}, {"detail", c["detail"]}});
  cli::render(out, rows, options);
  return out.str();
}

namespace {

// The table view: a key/value summary, then a row per wave.
struct TableView {
  Json summary;
  Json waves;
};

TableView table_view(const Json& d) {
  Json s = Json::object();
  s["id"] = d["id"];
  s["group"] = d["group"];
  s["state"] = d["state"];
  if (!d["halt_reason"].is_null()) s["reason"] = d["halt_reason"];
  if (d.contains("pause_reason") && !d["pause_reason"].is_null()) s["reason"] = d["pause_reason"];
  if (d.contains("trust_version") && !d["trust_version"].is_null()) {
    s["carries"] = fmt::format("trust update, version {}", d["trust_version"].get<std::int64_t>());
  } else {
    s["carries"] = "release";
    s["images"] = d["images"];
    s["manifest"] = d["manifest"].is_null() ? Json("-") : d["manifest"];
    s["sequence"] = d["sequence"].is_null() ? Json("-") : d["sequence"];
  }
  s["wave"] = fmt::format("{} of {} ({}%)", d["wave"].get<int>(), d["waves"].size(), d["rollout"].get<int>());
  if (d["step_after"].get<std::int64_t>() > 0) s["step_after"] = duration_text(d["step_after"].get<std::int64_t>());
  if (!d["next_wave_at"].is_null()) s["next_wave_at"] = d["next_wave_at"];
  s["halt_on_failure"] = !d["halt_on_failure"].is_number()
                            ? Json("never")
                            : Json(fmt::format("{} (once {} devices finished)",
                                               percent_text(d["halt_on_failure"].get<double>()),
                                               d.value("halt_min_executed", std::int64_t{0})));
  if (auto t = wave_success_text(d.value("wave_success", Json())); !t.empty()) s["wave_success"] = t;
  if (auto t = wave_error_text(d.value("wave_error", Json())); !t.empty()) s["wave_error"] = t;
  if (auto t = abort_criteria_text(d.value("abort_criteria", Json())); !t.empty()) s["abort_criteria"] = t;
  if (auto t = timeouts_text(d.value("timeouts", Json())); !t.empty()) s["timeouts"] = t;
  if (auto t = rate_text(d.value("rate", Json())); !t.empty())
    s["rate"] = d.contains("rate_now") ? fmt::format("{} (now {}/min; {} notified of {} allowed)", t,
                                                     d["rate_now"]["per_minute"].get<double>(),
                                                     d["rate_now"]["notified"].get<std::int64_t>(),
                                                     d["rate_now"]["allowed"].get<std::int64_t>())
                                       : t;
  if (d.contains("schedule") && d["schedule"].is_object() && !d["schedule"]["start_at"].is_null())
    s["start_at"] = d["schedule"]["start_at"];
  if (auto t = windows_text(d.value("schedule", Json())); !t.empty()) {
    s["windows"] = t;
    s["next_window_at"] = d.value("window_open", false) ? Json("open now")
                          : d.contains("next_window_at")  ? d["next_window_at"]
                                                          : Json("-");
    if (d.value("waiting_window", std::int64_t{0}) > 0) s["waiting_window"] = d["waiting_window"];
  }
  if (auto t = retry_text(d.value("retry", Json())); !t.empty()) s["retry"] = t;
  s["devices"] = d["devices"];
  s["admitted"] = d["admitted"];
  s["failures"] = d["failures"].get<std::int64_t>() > 0 && d["failures_forgiven"].get<std::int64_t>() > 0
                      ? Json(fmt::format("{} ({} forgiven by a resume)", d["failures"].get<std::int64_t>(),
                                         d["failures_forgiven"].get<std::int64_t>()))
                      : d["failures"];
  std::string counts;
  for (auto& [status, count] : d["device_status"].items()) {
    if (count.get<std::int64_t>() == 0) continue;
    if (!counts.empty()) counts += ", ";
    counts += fmt::format("{} {}", status, count.get<std::int64_t>());
  }
  s["status"] = counts.empty() ? std::string("-") : counts;
  if (!d["previous"].is_null()) s["previous"] = d["previous"];
  if (d.contains("attention") && d["attention"].is_string()) s["attention"] = d["attention"];
  if (d.contains("silent_devices") && !d["silent_devices"].empty()) {
    std::string names;
    for (auto& id : d["silent_devices"]) names += (names.empty() ? "" : ", ") + id.get<std::string>();
    if (d["silent"].get<std::int64_t>() > static_cast<std::int64_t>(d["silent_devices"].size())) names += ", ...";
    s["silent"] = names;
  }
  if (d.contains("revert"))
    s["revert"] = fmt::format("{} reverting, {} cannot be reverted", d["revert"]["reverting"].get<std::int64_t>(),
                              d["revert"]["unrevertable"].get<std::int64_t>());
  Json rows = Json::array();
  for (auto& w : d["waves"]) {
    Json row = {{"wave", w["wave"]},
                {"percent", fmt::format("{}%", w["percent"].get<int>())},
                {"state", w["state"]},
                {"admitted", w["admitted"]}};
    for (auto& [status, count] : w["status"].items()) row[status] = count;
    rows.push_back(std::move(row));
  }
  return {s, rows};
}

}  // namespace

std::string deployment_table_text(const Json& deployment, const RenderOptions& options) {
  auto view = table_view(deployment);
  std::ostringstream out;
  cli::render(out, view.summary, options);
  out << "\n";
  cli::render(out, view.waves, options);
  return out.str();
}

void render_deployment(const Context& ctx, const Json& deployment) {
  if (ctx.format() == OutputFormat::table)
    ctx.write_output(deployment_table_text(deployment, ctx.render_options()));
  else
    ctx.render(deployment);
}

void render_deployment_plan(const Context& ctx, const Json& plan) {
  if (ctx.format() == OutputFormat::table)
    ctx.write_output(dry_run_text(plan, ctx.render_options()));
  else
    ctx.render(plan);
}

Json deployment_list_rows(const Json& all) {
  Json rows = Json::array();
  for (auto& d : all)
    rows.push_back(Json{{"id", d["id"]},
                        {"group", d["group"]},
                        {"carries", d.contains("trust_version") && !d["trust_version"].is_null()
                                        ? fmt::format("trust {}", d["trust_version"].get<std::int64_t>())
                                        : std::string("release")},
                        {"state", d["state"]},
                        {"wave", fmt::format("{}/{}", d["wave"].get<int>(), d["waves"].size())},
                        {"rollout", fmt::format("{}%", d["rollout"].get<int>())},
                        {"admitted", d["admitted"]},
                        {"installed", d["device_status"][status_name(DeviceStatus::installed)]},
                        {"failures", d["failures"]},
                        {"created_at", d["created_at"]}});
  return rows;
}

void render_deployment_list(const Context& ctx, const Json& deployments) {
  ctx.render(ctx.format() == OutputFormat::table ? deployment_list_rows(deployments) : deployments);
}

DeploymentWatchView::DeploymentWatchView(const Context& ctx)
    : ctx_(ctx), redraw_(ctx.format() == OutputFormat::table && ctx.stdout_is_terminal()) {}

bool DeploymentWatchView::events() const { return ctx_.format() == OutputFormat::jsonl; }

std::function<void(const Json&)> DeploymentWatchView::sink() {
  return [this](const Json& item) { show(item); };
}

void DeploymentWatchView::show(const Json& view) {
  if (ctx_.format() == OutputFormat::json || events()) {
    ctx_.write_output(json_text(view) + "\n");  // one object per line and change, flushed
  } else if (redraw_) {
    auto text = deployment_table_text(view, ctx_.render_options());
    // Move up over the previous drawing and clear to the end of the screen: a live table in place.
    if (drawn_lines_ > 0) ctx_.write_output(fmt::format("\x1b[{}A\r\x1b[J", drawn_lines_));
    ctx_.write_output(text);
    drawn_lines_ = static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
  } else {
    render_deployment(ctx_, view);
    if (ctx_.format() == OutputFormat::table) ctx_.write_output("\n");
  }
}

}  // namespace kiln::cli
