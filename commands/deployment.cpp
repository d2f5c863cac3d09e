// kiln deployment: roll images out to a device group in waves; show, watch, pause, resume, abort.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <iostream>
#include <sstream>

#include <fmt/format.h>

#include "cli/context.hpp"
#include "commands/commands.hpp"
#include "commands/service_session.hpp"
#include "core/error.hpp"
#include "core/maintenance_window.hpp"
#include "core/time.hpp"

namespace kiln::commands {
namespace {

using Json = cli::Json;

struct DeploymentArgs {
  std::string group;
  std::vector<std::string> images;
  std::string manifest;
  std::string rollout = "100%";
  std::string step_after;
  std::string halt_on_failure;
  std::string halt_min_executed;
  std::string wave_success;
  std::string wave_success_then;
  std::string wave_error;
  std::vector<std::string> abort_on;
  std::vector<std::string> timeouts;
  std::string rate, rate_factor, rate_increase_on, rate_max;
  std::string start_at;
  std::string retry, retry_backoff, retry_backoff_max;
  std::vector<std::string> windows;
  std::string window_tz;
  bool dry_run = false;
  std::string interval = "2s";
  std::string status;
  std::string id;
};

double parse_percent(std::string text, const char* option, double low) {
  if (text.ends_with('%')) text.pop_back();
  try {
    std::size_t used = 0;
    double value = std::stod(text, &used);
    if (used == text.size() && value >= low && value <= 100) return value;
  } catch (const std::exception&) {
  }
  throw Error(ExitCode::usage, fmt::format("{} wants a percentage {}%..100%, not '{}'", option, low, text));
}

// A whole number of devices, 1..1000000.
std::int64_t parse_count(const std::string& text, const char* option) {
  try {
    std::size_t used = 0;
    auto value = std::stoll(text, &used);
    if (used == text.size() && value >= 1 && value <= 1000000) return value;
  } catch (const std::exception&) {
  }
  throw Error(ExitCode::usage, fmt::format("{} wants a number of devices 1..1000000, not '{}'", option, text));
}

std::string cli_percent(double value);
std::int64_t parse_duration_ms(const std::string& text, const char* option);
std::string duration_text(std::int64_t seconds);

// Devices per minute, 1..1000.
std::int64_t parse_per_minute(const std::string& text, const char* option) {
  try {
    std::size_t used = 0;
    auto value = std::stoll(text, &used);
    if (used == text.size() && value >= 1 && value <= 1000) return value;
  } catch (const std::exception&) {
  }
  throw Error(ExitCode::usage, fmt::format("{} wants devices per minute, 1..1000 (e.g. 10 or 10/m), not '{}'", option, text));
}

// A whole number 0..1000000 (a count that may be zero).
std::int64_t parse_whole(const std::string& text, const char* option) {
  try {
    std::size_t used = 0;
    auto value = std::stoll(text, &used);
    if (used == text.size() && value >= 0 && value <= 1000000) return value;
  } catch (const std::exception&) {
  }
  throw Error(ExitCode::usage, fmt::format("{} wants a number of devices 0..1000000 or a percentage, not '{}'", option, text));
}

// Retries after the first attempt, 1..10.
std::int64_t parse_retries(const std::string& text) {
  try {
    std::size_t used = 0;
    auto value = std::stoll(text, &used);
    if (used == text.size() && value >= 1 && value <= 10) return value;
  } catch (const std::exception&) {
  }
  throw Error(ExitCode::usage, fmt::format("--retry wants a number of retries 1..10, not '{}'", text));
}

// A whole number of seconds 1..`max` from a duration ("30s", "5m").
std::int64_t parse_seconds(const std::string& text, const char* option, std::int64_t max) {
  auto ms = parse_duration_ms(text, option);
  if (ms < 1000 || ms / 1000 > max || ms % 1000 != 0)
    throw Error(ExitCode::usage, fmt::format("{} wants whole seconds, 1s..{}, not '{}'", option, duration_text(max), text));
  return ms / 1000;
}

// The rollout controls of `deployment create` as the API takes them (docs/service.md, "Rollout controls").
Json rollout_controls(const DeploymentArgs& args) {
  Json controls = Json::object();
  if (!args.wave_success.empty()) {
    controls["wave_success"] = {{"percent", parse_percent(args.wave_success, "--wave-success", 0)}};
    if (!args.wave_success_then.empty()) controls["wave_success"]["then"] = args.wave_success_then;
  } else if (!args.wave_success_then.empty()) {
    throw Error(ExitCode::usage, "--wave-success-then needs --wave-success PERCENT");
  }
  if (!args.wave_error.empty()) {
    if (args.wave_error.ends_with('%'))
      controls["wave_error"] = {{"percent", parse_percent(args.wave_error, "--wave-error", 0)}};
    else
      controls["wave_error"] = {{"count", parse_whole(args.wave_error, "--wave-error")}};
  }
  if (!args.abort_on.empty()) {
    Json criteria = Json::array();
    static const char* kinds[] = {"failed", "refused", "rolled_back", "timed_out"};
    for (auto& text : args.abort_on) {
      // KIND:PERCENT[:MIN_EXECUTED]
      auto first = text.find(':');
      auto second = first == std::string::npos ? std::string::npos : text.find(':', first + 1);
      auto kind = text.substr(0, first);
      if (first == std::string::npos ||
          std::none_of(std::begin(kinds), std::end(kinds), [&](const char* k) { return kind == k; }))
        throw Error(ExitCode::usage,
                    fmt::format("--abort-on wants KIND:PERCENT[:MIN_EXECUTED] with KIND failed, refused, rolled_back "
                                "or timed_out, not '{}'",
                                text));
      Json c = {{"kind", kind},
                {"percent", parse_percent(text.substr(first + 1, second == std::string::npos ? std::string::npos
                                                                                              : second - first - 1),
                                          "--abort-on", 0)}};
      if (second != std::string::npos) c["min_executed"] = parse_count(text.substr(second + 1), "--abort-on");
      for (auto& other : criteria)
        if (other["kind"] == kind) throw Error(ExitCode::usage, fmt::format("--abort-on names {} twice", kind));
      criteria.push_back(std::move(c));
    }
    controls["abort_criteria"] = criteria;
  }
  if (!args.timeouts.empty()) {
    // PHASE=DURATION, PHASE one of downloading, installing, testing.
    Json timeouts = Json::object();
    for (auto& text : args.timeouts) {
      auto eq = text.find('=');
      auto phase = text.substr(0, eq);
      if (eq == std::string::npos || (phase != "downloading" && phase != "installing" && phase != "testing"))
        throw Error(ExitCode::usage,
                    fmt::format("--timeout wants PHASE=DURATION with PHASE downloading, installing or testing (e.g. "
                                "downloading=10m), not '{}'",
                                text));
      auto ms = parse_duration_ms(text.substr(eq + 1), "--timeout");
      if (ms < 1000 || ms > 7 * 86400000LL) throw Error(ExitCode::usage, "--timeout takes 1s..7d");
      if (timeouts.contains(phase)) throw Error(ExitCode::usage, fmt::format("--timeout names {} twice", phase));
      timeouts[phase] = ms / 1000;
    }
    controls["timeouts"] = timeouts;
  }
  if (!args.rate.empty()) {
    auto text = args.rate;
    if (text.ends_with("/m")) text.resize(text.size() - 2);
    Json rate = {{"base_per_minute", parse_per_minute(text, "--rate")}};
    if (!args.rate_factor.empty()) {
      try {
        std::size_t used = 0;
        double f = std::stod(args.rate_factor, &used);
        if (used != args.rate_factor.size() || !(f >= 1 && f <= 5)) throw std::invalid_argument("range");
        rate["factor"] = f;
      } catch (const std::exception&) {
        throw Error(ExitCode::usage, fmt::format("--rate-factor wants a number 1..5, not '{}'", args.rate_factor));
      }
    }
    if (!args.rate_increase_on.empty()) {
      // notified:N or succeeded:N
      auto colon = args.rate_increase_on.find(':');
      auto on = args.rate_increase_on.substr(0, colon);
      if (colon == std::string::npos || (on != "notified" && on != "succeeded"))
        throw Error(ExitCode::usage, fmt::format("--rate-increase-on wants notified:N or succeeded:N, not '{}'",
                                                 args.rate_increase_on));
      rate["increase_on"] = on;
      rate["every"] = parse_count(args.rate_increase_on.substr(colon + 1), "--rate-increase-on");
    }
    if (!args.rate_max.empty()) rate["max_per_minute"] = parse_per_minute(args.rate_max, "--rate-max");
    if (rate.value("factor", 1.0) > 1 && !rate.contains("every"))
      throw Error(ExitCode::usage, "--rate-factor needs --rate-increase-on notified:N or succeeded:N");
    controls["rate"] = rate;
  } else if (!args.rate_factor.empty() || !args.rate_increase_on.empty() || !args.rate_max.empty()) {
    throw Error(ExitCode::usage, "--rate-factor, --rate-increase-on and --rate-max need --rate DEVICES_PER_MINUTE");
  }
  if (!args.start_at.empty()) {
    auto at = normalize_timestamp(args.start_at);
    if (!at)
      throw Error(ExitCode::usage, fmt::format("--start-at wants a time with its zone, e.g. 2026-12-24T02:00:00Z, not '{}'",
                                               args.start_at));
    controls["schedule"] = {{"start_at", *at}};
  }
  if (!args.windows.empty()) {
    Json windows = Json::array();
    for (auto& text : args.windows) {
      std::string why;
      if (!parse_maintenance_window(text, why)) throw Error(ExitCode::usage, "--window " + why);
      windows.push_back(text);
    }
    controls["schedule"]["windows"] = windows;
    if (!args.window_tz.empty()) {
      if (!known_time_zone(args.window_tz))
        throw Error(ExitCode::usage,
                    fmt::format("--window-tz wants an IANA time zone such as Europe/Berlin or UTC, not '{}'", args.window_tz));
      controls["schedule"]["time_zone"] = args.window_tz;
    }
  } else if (!args.window_tz.empty()) {
    throw Error(ExitCode::usage, "--window-tz needs --window DAYS HH:MM-HH:MM");
  }
  if (!args.retry.empty()) {
    Json retry = {{"retries", parse_retries(args.retry)}};
    if (!args.retry_backoff.empty()) retry["backoff_seconds"] = parse_seconds(args.retry_backoff, "--retry-backoff", 86400);
    if (!args.retry_backoff_max.empty())
      retry["backoff_max_seconds"] = parse_seconds(args.retry_backoff_max, "--retry-backoff-max", 7 * 86400);
    if (retry.contains("backoff_seconds") && retry.contains("backoff_max_seconds") &&
        retry["backoff_max_seconds"].get<std::int64_t>() < retry["backoff_seconds"].get<std::int64_t>())
      throw Error(ExitCode::usage, "--retry-backoff-max must not be below --retry-backoff");
    controls["retry"] = retry;
  } else if (!args.retry_backoff.empty() || !args.retry_backoff_max.empty()) {
    throw Error(ExitCode::usage, "--retry-backoff and --retry-backoff-max need --retry N");
  }
  return controls;
}

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
  return fmt::format("{} of a wave installed, then {}", cli_percent(v["percent"].get<double>()),
                     v["then"] == "pause" ? "pause for a resume" : "open the next wave");
}
std::string wave_error_text(const Json& v) {
  if (!v.is_object()) return {};
  if (v.contains("count")) return fmt::format("halt above {} failed devices in a wave", v["count"].get<std::int64_t>());
  return fmt::format("halt above {} of a wave failed", cli_percent(v["percent"].get<double>()));
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
                       cli_percent(c["percent"].get<double>()), c["min_executed"].get<std::int64_t>());
  return out;
}

// "1%,10%,50%,100%": cumulative percentages, increasing.
std::vector<int> parse_waves(const std::string& text) {
  std::vector<int> waves;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, ',');) {
    double value = parse_percent(part, "--rollout", 1);
    if (value != static_cast<int>(value))
      throw Error(ExitCode::usage, "--rollout takes whole percentages, e.g. 1%,10%,100%");
    if (!waves.empty() && static_cast<int>(value) <= waves.back())
      throw Error(ExitCode::usage, "--rollout waves must increase, e.g. 1%,10%,50%,100%");
    waves.push_back(static_cast<int>(value));
  }
  if (waves.empty()) throw Error(ExitCode::usage, "--rollout wants a percentage or waves such as 1%,10%,100%");
  return waves;
}

// "30s", "5m", "1h", "2d", or plain seconds; at most 366 days (the service's limit for step_after).
std::int64_t parse_duration_ms(const std::string& text, const char* option) {
  constexpr double max_ms = 366.0 * 86400000;
  try {
    std::size_t used = 0;
    double value = std::stod(text, &used);
    std::string unit = text.substr(used);
    double scale = unit.empty() || unit == "s" ? 1000
                   : unit == "ms"              ? 1
                   : unit == "m"               ? 60000
                   : unit == "h"               ? 3600000
                   : unit == "d"               ? 86400000
                                               : -1;
    // value * scale <= max_ms also keeps inf, nan and overflowing values away from the integer cast.
    if (scale > 0 && value > 0 && value * scale <= max_ms) return static_cast<std::int64_t>(value * scale);
  } catch (const std::exception&) {
  }
  throw Error(ExitCode::usage,
              fmt::format("{} wants a duration such as 30s, 5m or 1h (at most 366d), not '{}'", option, text));
}

std::string duration_text(std::int64_t seconds) {
  if (seconds % 3600 == 0) return fmt::format("{}h", seconds / 3600);
  if (seconds % 60 == 0) return fmt::format("{}m", seconds / 60);
  return fmt::format("{}s", seconds);
}

std::string cli_percent(double value) {
  if (value == static_cast<double>(static_cast<long long>(value))) return fmt::format("{}%", static_cast<long long>(value));
  return fmt::format("{}%", value);
}

// A dry run: the summary, then a row per check (the plan of waves is in -o json).
void render_dry_run(const cli::Context& ctx, const Json& plan) {
  if (ctx.format() != cli::OutputFormat::table) {
    ctx.render(plan);
  } else {
    Json s = Json::object();
    s["would_create"] = plan["would_create"].get<bool>() ? "yes" : "no";
    s["group"] = plan["group"];
    s["devices"] = plan["devices"];
    std::string waves;
    for (auto& w : plan["waves"])
      waves += fmt::format("{}wave {} ({}%): {} devices", waves.empty() ? "" : ", ", w["wave"].get<int>(),
                           w["percent"].get<int>(), w["devices"].size());
    s["waves"] = waves;
    auto& r = plan["rollout"];
    s["halt_on_failure"] = r["halt_on_failure"].is_number()
                               ? Json(fmt::format("{} (once {} devices finished)",
                                                  cli_percent(r["halt_on_failure"].get<double>()),
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
    cli::render(out, s, ctx.render_options());
    out << "\n";
    Json rows = Json::array();
    for (auto& c : plan["checks"])
      rows.push_back(Json{{"check", c["check"]}, {"result", c["passed"].get<bool>() ? "passed" : "FAILED"}, {"detail", c["detail"]}});
    cli::render(out, rows, ctx.render_options());
    std::cout << out.str() << std::flush;
  }
  if (!plan["would_create"].get<bool>())
    throw Error(ExitCode::verification_failed,
                fmt::format("the deployment would be refused: {}", plan["reason"].get<std::string>()));
}

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
  s["images"] = d["images"];
  s["manifest"] = d["manifest"].is_null() ? Json("-") : d["manifest"];
  s["sequence"] = d["sequence"].is_null() ? Json("-") : d["sequence"];
  s["wave"] = fmt::format("{} of {} ({}%)", d["wave"].get<int>(), d["waves"].size(), d["rollout"].get<int>());
  if (d["step_after"].get<std::int64_t>() > 0) s["step_after"] = duration_text(d["step_after"].get<std::int64_t>());
  if (!d["next_wave_at"].is_null()) s["next_wave_at"] = d["next_wave_at"];
  s["halt_on_failure"] = !d["halt_on_failure"].is_number()
                            ? Json("never")
                            : Json(fmt::format("{} (once {} devices finished)",
                                               cli_percent(d["halt_on_failure"].get<double>()),
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

std::string table_text(const cli::Context& ctx, const Json& deployment) {
  auto view = table_view(deployment);
  std::ostringstream out;
  cli::render(out, view.summary, ctx.render_options());
  out << "\n";
  cli::render(out, view.waves, ctx.render_options());
  return out.str();
}

void render_deployment(const cli::Context& ctx, const Json& deployment) {
  if (ctx.format() == cli::OutputFormat::table)
    std::cout << table_text(ctx, deployment) << std::flush;
  else
    ctx.render(deployment);
}

// watch: exit 0 completed, 8 halted, 7 aborted or superseded (docs/exit-codes.md).
void finish_watch(const Json& last) {
  auto state = last["state"].get<std::string>();
  auto id = last["id"].get<std::string>();
  if (state == "completed") return;
  if (state == "halted")
    throw Error(
        ExitCode::partial, fmt::format("deployment {} {}", id, last["halt_reason"].get<std::string>()),
        fmt::format("see why with 'kiln deployment devices {} --status failures', then 'kiln deployment resume {}' "
                    "or 'kiln deployment abort {}'",
                    id, id, id));
  if (state == "superseded")
    throw Error(ExitCode::conflict, fmt::format("deployment {} was superseded before it completed", id),
                fmt::format("a newer deployment replaced it: kiln deployment list --group \"{}\"",
                            last["group"].get<std::string>()));
  if (last.contains("halt_reason") && last["halt_reason"].is_string())
    throw Error(ExitCode::conflict, fmt::format("deployment {} {}", id, last["halt_reason"].get<std::string>()),
                "devices that installed it are sent back to what they ran before when they check in");
  throw Error(ExitCode::conflict, fmt::format("deployment {} was aborted before it completed", id),
              "devices that installed it are sent back to the previous deployment when they check in");
}

// abort: exit 8 when a device that took the deployment cannot be sent back (docs/exit-codes.md).
void finish_abort(const Json& answer) {
  auto it = answer.find("revert");
  if (it == answer.end() || !it->is_object()) return;
  std::string names;
  std::int64_t count = 0;
  for (auto& d : (*it)["devices"]) {
    if (d["state"] != "unrevertable") continue;
    ++count;
    if (count <= 10) names += fmt::format("\n  {}: {}", d["device"].get<std::string>(), d["reason"].get<std::string>());
  }
  if (count == 0) return;
  throw Error(ExitCode::partial,
              fmt::format("deployment {} is aborted, but {} device{} cannot be reverted:{}{}", answer["id"].get<std::string>(),
                          count, count == 1 ? "" : "s", names, count > 10 ? "\n  ..." : ""),
              "they keep running this deployment's release; deploy a newer release to them");
}

}  // namespace

void add_deployment(CLI::App& app, cli::Context& ctx) {
  auto* deployment = app.add_subcommand("deployment", "Deployments of images to device groups, in waves");
  deployment->require_subcommand(1);
  auto args = std::make_shared<DeploymentArgs>();

  auto* create = deployment->add_subcommand("create", "Deploy images to a group, in waves");
  create->add_option("--group", args->group, "Group ID or Product/Group")->required();
  create->add_option("--image", args->images, "Image ID (SHA-256); repeat for several")->required();
  create->add_option("--manifest", args->manifest,
                     "SUIT manifest ID (SHA-256); default: the manifest uploaded with the image");
  create->add_option("--rollout", args->rollout, "Share of the group per wave, cumulative: 10% or 1%,10%,50%,100%");
  create->add_option("--step-after", args->step_after, "Time before the next wave opens: 30s, 5m, 1h");
  create->add_option("--halt-on-failure", args->halt_on_failure,
                     "Halt when failed devices pass this share of admitted ones (default 5%), or never");
  create->add_option("--halt-min-executed", args->halt_min_executed,
                     "Apply the halt threshold once this many devices finished (default 5)");
  create->add_option("--wave-success", args->wave_success,
                     "Open the next wave once this share of a wave's devices installed (e.g. 90%)");
  create->add_option("--wave-success-then", args->wave_success_then,
                     "On wave success: next (open the next wave, the default) or pause (wait for 'resume')")
      ->check(CLI::IsMember({"next", "pause"}));
  create->add_option("--wave-error", args->wave_error,
                     "Halt when more than this many (3) or this share (10%) of a wave's devices failed");
  create->add_option("--abort-on", args->abort_on,
                     "Abort when more than PERCENT of executed devices ended KIND (failed, refused, rolled_back, "
                     "timed_out), once MIN_EXECUTED (default 5) finished: KIND:PERCENT[:MIN_EXECUTED]; repeatable");
  create->add_option("--timeout", args->timeouts,
                     "A device silent this long in a phase is timed_out, a failure: PHASE=DURATION with PHASE "
                     "downloading, installing or testing (e.g. downloading=10m); repeatable");
  create->add_option("--rate", args->rate,
                     "Offer it to at most this many new devices per minute (1..1000, e.g. 10 or 10/m), the first at once");
  create->add_option("--rate-factor", args->rate_factor, "Multiply the rate by this (1..5) at each raise");
  create->add_option("--rate-increase-on", args->rate_increase_on,
                     "Raise the rate each time N more devices were notified or succeeded: notified:N or succeeded:N");
  create->add_option("--rate-max", args->rate_max, "Never above this many devices per minute (1..1000)");
  create->add_option("--start-at", args->start_at,
                     "Scheduled start: nothing is offered before this time (e.g. 2026-12-24T02:00:00Z); waves and rate "
                     "count from it");
  create->add_option("--retry", args->retry,
                     "Retry a device whose attempt failed transiently (download cut, power lost while installing) up "
                     "to N more times (1..10)");
  create->add_option("--retry-backoff", args->retry_backoff,
                     "Wait before the first retry (default 1m); the wait doubles at each retry");
  create->add_option("--retry-backoff-max", args->retry_backoff_max,
                     "At most this wait between retries (default 1h, or the backoff when above)");
  create->add_option("--window", args->windows,
                     "Maintenance window: devices start (or retry) only inside one: DAYS HH:MM-HH:MM, e.g. \"Mon-Fri "
                     "01:00-04:00\" or \"Sat,Sun 22:00-02:00\" (crossing midnight); repeatable");
  create->add_option("--window-tz", args->window_tz,
                     "IANA time zone of the windows (default UTC); a device's own zone (device update --time-zone) "
                     "wins");
  create->add_flag("--dry-run", args->dry_run,
                   "Check and plan (devices, waves, checks) without creating anything; exit 3 if it would be refused");
  create->callback([&ctx, args] {
    transport::DeploymentRequest request;
    request.group = args->group;
    request.images = args->images;
    if (!args->manifest.empty()) request.manifest = args->manifest;
    request.waves = parse_waves(args->rollout);
    if (!args->step_after.empty()) {
      auto ms = parse_duration_ms(args->step_after, "--step-after");
      if (ms < 1000) throw Error(ExitCode::usage, "--step-after is at least 1s");
      request.step_after = ms / 1000;
    }
    request.controls = rollout_controls(*args);
    if (request.waves.size() > 1 && !request.step_after && args->wave_success.empty())
      throw Error(ExitCode::usage,
                  "a rollout in several waves needs --step-after (e.g. --step-after 1h) or --wave-success");
    if (args->halt_on_failure == "never")
      request.halt_never = true;
    else if (!args->halt_on_failure.empty())
      request.halt_on_failure = parse_percent(args->halt_on_failure, "--halt-on-failure", 0);
    if (!args->halt_min_executed.empty())
      request.halt_min_executed = parse_count(args->halt_min_executed, "--halt-min-executed");
    request.dry_run = args->dry_run;
    auto api = connect(ctx);
    auto answer = transport::create_deployment(api, request);
    if (args->dry_run) return render_dry_run(ctx, answer);
    render_deployment(ctx, answer);
  });

  auto* list = deployment->add_subcommand("list", "List deployments");
  list->add_option("--group", args->group, "Only this group's deployments");
  list->callback([&ctx, args] {
    auto api = connect(ctx);
    Json rows = Json::array();
    auto all = transport::list_deployments(api, args->group.empty() ? std::nullopt : std::optional(args->group));
    if (ctx.format() != cli::OutputFormat::table) return ctx.render(all);
    for (auto& d : all)
      rows.push_back(Json{{"id", d["id"]},
                          {"group", d["group"]},
                          {"state", d["state"]},
                          {"wave", fmt::format("{}/{}", d["wave"].get<int>(), d["waves"].size())},
                          {"rollout", fmt::format("{}%", d["rollout"].get<int>())},
                          {"admitted", d["admitted"]},
                          {"installed", d["device_status"]["installed"]},
                          {"failures", d["failures"]},
                          {"created_at", d["created_at"]}});
    ctx.render(rows);
  });

  auto* show = deployment->add_subcommand("show", "Show a deployment: state, halt reason, counts per wave and state");
  show->add_option("ID", args->id, "Deployment ID")->required();
  show->callback([&ctx, args] {
    auto api = connect(ctx);
    render_deployment(ctx, transport::show_deployment(api, args->id));
  });

  auto* devices = deployment->add_subcommand("devices", "List a deployment's admitted devices: wave, status, detail");
  devices->add_option("ID", args->id, "Deployment ID")->required();
  devices->add_option("--status", args->status,
                      "Only this status (failures: failed, rolled_back, refused or timed_out)")
      ->check(CLI::IsMember({"pending", "failures", "downloading", "verifying", "installing", "testing", "installed",
                             "failed", "rolled_back", "refused", "timed_out", "notified", "retrying",
                             "waiting_window"}));
  devices->callback([&ctx, args] {
    auto api = connect(ctx);
    ctx.render(transport::list_deployment_devices(api, args->id,
                                                  args->status.empty() ? std::nullopt : std::optional(args->status)));
  });

  auto* watch = deployment->add_subcommand(
      "watch",
      "Follow a deployment until it completes (exit 0), halts (8) or is aborted or superseded (7); -o jsonl: one "
      "event per state change");
  watch->add_option("ID", args->id, "Deployment ID")->required();
  watch->add_option("--interval", args->interval, "Time between polls: 500ms, 2s, 1m");
  watch->callback([&ctx, args] {
    auto interval = parse_duration_ms(args->interval, "--interval");
    if (interval < 100) throw Error(ExitCode::usage, "--interval is at least 100ms");
    auto api = connect(ctx);
    if (ctx.format() == cli::OutputFormat::jsonl) {
      // One event per state change, flushed as it is seen (a CI job can gate on it).
      auto last = transport::watch_deployment_events(api, args->id, static_cast<int>(interval), [](const Json& event) {
        std::cout << cli::json_text(event) << "\n" << std::flush;
      });
      return finish_watch(last);
    }
    bool redraw = ctx.format() == cli::OutputFormat::table && ctx.stdout_is_terminal();
    std::size_t drawn_lines = 0;
    auto last = transport::watch_deployment(api, args->id, static_cast<int>(interval), [&](const Json& view) {
      if (ctx.format() == cli::OutputFormat::json) {
        std::cout << cli::json_text(view) << "\n" << std::flush;  // one object per line and change
      } else if (redraw) {
        auto text = table_text(ctx, view);
        // Move up over the previous drawing and clear to the end of the screen: a live table in place.
        if (drawn_lines > 0) std::cout << fmt::format("\x1b[{}A\r\x1b[J", drawn_lines);
        std::cout << text << std::flush;
        drawn_lines = static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
      } else {
        render_deployment(ctx, view);
        if (ctx.format() == cli::OutputFormat::table) std::cout << "\n" << std::flush;
      }
    });
    finish_watch(last);
  });

  auto* report = deployment->add_subcommand(
      "report", "Every device of the deployment's group: final state, versions before and after, failure, timings");
  report->add_option("ID", args->id, "Deployment ID")->required();
  report->callback([&ctx, args] {
    auto api = connect(ctx);
    ctx.render(transport::deployment_report(api, args->id));
  });

  for (const char* action : {"pause", "resume", "abort"}) {
    const char* help = std::string_view(action) == "pause" ? "Stop offering a deployment (devices keep what they have)"
                       : std::string_view(action) == "resume"
                           ? "Continue a paused or halted deployment (failures so far are forgiven; after a wave "
                             "success pause, the next wave opens)"
                           : "End a deployment: each device that installed it goes back to exactly what it ran "
                             "before (exit 8 if one cannot)";
    auto* change = deployment->add_subcommand(action, help);
    change->add_option("ID", args->id, "Deployment ID")->required();
    change->callback([&ctx, args, action] {
      auto api = connect(ctx);
      auto answer = transport::change_deployment(api, args->id, action);
      render_deployment(ctx, answer);
      if (std::string_view(action) == "abort") finish_abort(answer);
    });
  }
}

}  // namespace kiln::commands
