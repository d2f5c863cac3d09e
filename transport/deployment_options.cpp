#include "transport/deployment_options.hpp"

#include <algorithm>
#include <charconv>
#include <sstream>

#include <fmt/format.h>

#include "core/deployment_states.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "core/maintenance_window.hpp"
#include "core/time.hpp"

namespace kiln::transport {
namespace {

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

// A whole number in min..max; otherwise a usage error: "OPTION wants WHAT, not 'TEXT'".
std::int64_t parse_whole_number(const std::string& text, const char* option, std::int64_t min, std::int64_t max,
                                std::string_view what) {
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (!text.empty() && ec == std::errc() && end == text.data() + text.size() && value >= min && value <= max)
    return value;
  throw Error(ExitCode::usage, fmt::format("{} wants {}, not '{}'", option, what, text));
}

std::int64_t parse_count(const std::string& text, const char* option) {
  return parse_whole_number(text, option, 1, 1000000, "a number of devices 1..1000000");
}

std::int64_t parse_per_minute(const std::string& text, const char* option) {
  return parse_whole_number(text, option, 1, 1000, "devices per minute, 1..1000 (e.g. 10 or 10/m)");
}

// A count that may be zero (--wave-error also takes a percentage).
std::int64_t parse_whole(const std::string& text, const char* option) {
  return parse_whole_number(text, option, 0, 1000000, "a number of devices 0..1000000 or a percentage");
}

// Retries after the first attempt.
std::int64_t parse_retries(const std::string& text) {
  return parse_whole_number(text, "--retry", 1, 10, "a number of retries 1..10");
}

// A whole number of seconds 1..`max` from a duration ("30s", "5m").
std::int64_t parse_seconds(const std::string& text, const char* option, std::int64_t max) {
  auto ms = parse_duration_ms(text, option);
  if (ms < 1000 || ms / 1000 > max || ms % 1000 != 0)
    throw Error(ExitCode::usage, fmt::format("{} wants whole seconds, 1s..{}, not '{}'", option, duration_text(max), text));
  return ms / 1000;
}

// The rollout controls of `deployment create` as the API takes them (docs/service.md, "Rollout controls").
}  // namespace

Json rollout_controls(const DeploymentOptions& args) {
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
    const auto& kinds = failure_kinds();
    for (auto& text : args.abort_on) {
      // KIND:PERCENT[:MIN_EXECUTED]
      auto first = text.find(':');
      auto second = first == std::string::npos ? std::string::npos : text.find(':', first + 1);
      auto kind = text.substr(0, first);
      if (first == std::string::npos ||
          std::find(kinds.begin(), kinds.end(), kind) == kinds.end())
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
      const auto& phases = timeout_phases();
      if (eq == std::string::npos || std::find(phases.begin(), phases.end(), phase) == phases.end())
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

std::string percent_text(double value) {
  if (value == static_cast<double>(static_cast<long long>(value))) return fmt::format("{}%", static_cast<long long>(value));
  return fmt::format("{}%", value);
}

DeploymentRequest deployment_request(const DeploymentOptions& args) {
  DeploymentRequest request;
  request.group = args.group;
  if (args.images.empty() == args.trust_update.empty())
    throw Error(ExitCode::usage, "a deployment carries images (--image) or a trust update (--trust-update FILE): give one");
  if (!args.trust_update.empty() && !args.manifest.empty())
    throw Error(ExitCode::usage, "--manifest goes with --image: a trust update is its own signed statement");
  request.images = args.images;
  if (!args.manifest.empty()) request.manifest = args.manifest;
  if (!args.trust_update.empty()) request.trust_update = read_file(args.trust_update);
  request.waves = parse_waves(args.rollout);
  if (!args.step_after.empty()) {
    auto ms = parse_duration_ms(args.step_after, "--step-after");
    if (ms < 1000) throw Error(ExitCode::usage, "--step-after is at least 1s");
    request.step_after = ms / 1000;
  }
  request.controls = rollout_controls(args);
  if (request.waves.size() > 1 && !request.step_after && args.wave_success.empty())
    throw Error(ExitCode::usage,
                "a rollout in several waves needs --step-after (e.g. --step-after 1h) or --wave-success");
  if (args.halt_on_failure == "never")
    request.halt_never = true;
  else if (!args.halt_on_failure.empty())
    request.halt_on_failure = parse_percent(args.halt_on_failure, "--halt-on-failure", 0);
  if (!args.halt_min_executed.empty())
    request.halt_min_executed = parse_count(args.halt_min_executed, "--halt-min-executed");
  request.dry_run = args.dry_run;
  return request;
}

// watch: exit 0 completed, 8 halted, 7 aborted or superseded (docs/exit-codes.md).
int watch_interval_ms(const std::string& text) {
  auto interval = parse_duration_ms(text, "--interval");
  if (interval < 100) throw Error(ExitCode::usage, "--interval is at least 100ms");
  // An int of milliseconds holds 24 days; a watch that polls less than daily is not watching.
  if (interval > 24 * 3600 * 1000) throw Error(ExitCode::usage, "--interval is at most 24h");
  return static_cast<int>(interval);
}

void require_watch_completed(const Json& last) {
  auto state = deployment_state(last);
  auto id = last["id"].get<std::string>();
  if (state == DeploymentState::completed) return;
  if (state == DeploymentState::halted)
    throw Error(
        ExitCode::partial, fmt::format("deployment {} {}", id, last["halt_reason"].get<std::string>()),
        fmt::format("see why with 'kiln deployment devices {} --status failures', then 'kiln deployment resume {}' "
                    "or 'kiln deployment abort {}'",
                    id, id, id));
  if (state == DeploymentState::superseded)
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
void require_all_reverted(const Json& answer) {
  auto it = answer.find("revert");
  if (it == answer.end() || !it->is_object()) return;
  std::string names;
  std::int64_t count = 0;
  for (auto& d : (*it)["devices"]) {
    auto text = d.value("state", "");
    auto state = parse_revert_state(text);
    if (!state)
      throw Error(ExitCode::service, fmt::format("the service reports device {} in a revert state this kiln does not know: '{}'",
                                                 d.value("device", "?"), text),
                  "upgrade kiln to one that knows the service's revert states");
    if (*state != RevertState::unrevertable) continue;
    ++count;
    if (count <= 10) names += fmt::format("\n  {}: {}", d["device"].get<std::string>(), d["reason"].get<std::string>());
  }
  if (count == 0) return;
  throw Error(ExitCode::partial,
              fmt::format("deployment {} is aborted, but {} device{} cannot be reverted:{}{}", answer["id"].get<std::string>(),
                          count, count == 1 ? "" : "s", names, count > 10 ? "\n  ..." : ""),
              "they keep running this deployment's release; deploy a newer release to them");
}

void require_would_create(const Json& plan) {
  if (!plan["would_create"].get<bool>())
    throw Error(ExitCode::verification_failed,
                fmt::format("the deployment would be refused: {}", plan["reason"].get<std::string>()));
}

}  // namespace kiln::transport
