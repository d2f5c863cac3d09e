// Tests for service/rollout_policy: a create request's controls parsed into the policy and shown back (the
// API's DeploymentControls), stored and read back unchanged, the progress column, and each refused field
// with its 400 message. Pure functions: no store is involved.
#include <doctest/doctest.h>

#include "service/handlers.hpp"
#include "service/rollout_policy.hpp"

using namespace kiln::service;
using OJson = nlohmann::ordered_json;

namespace {

// The message of the ApiError parse_policy throws for `body` ("" when it parses).
std::string refusal(const std::string& body) {
  try {
    parse_policy(OJson::parse(body));
  } catch (const ApiError& e) {
    CHECK(e.status == 400);
    CHECK(e.code == "invalid_request");
    return e.message;
  }
  return "";
}

const char* full_request = R"({
  "wave_success": {"percent": 90, "then": "pause"},
  "wave_error": {"percent": 12.5},
  "abort_criteria": [{"kind": "refused", "percent": 10, "min_executed": 20}, {"kind": "timed_out", "percent": 5}],
  "timeouts": {"downloading": 600, "testing": 300},
  "rate": {"base_per_minute": 10, "factor": 2, "increase_on": "succeeded", "every": 50, "max_per_minute": 200},
  "schedule": {"start_at": "2026-12-24T03:00:00+01:00", "windows": ["Mon-Fri 01:00-04:00"], "time_zone": "Europe/Berlin"},
  "retry": {"retries": 3, "backoff_seconds": 30, "backoff_max_seconds": 600}
})";

}  // namespace

TEST_CASE("rollout_policy: every control of a request is parsed and shown back in the API's form") {
  auto policy = parse_policy(OJson::parse(full_request));
  CHECK(policy.wave.success_percent == 90);
  CHECK(policy.wave.pause_on_success);
  CHECK(policy.wave.error_percent == 12.5);
  CHECK_FALSE(policy.wave.error_count);
  REQUIRE(policy.abort.size() == 2);
  CHECK(policy.abort[1].min_executed == default_abort_min_executed);  // not given: the default
  CHECK(policy.timeouts == Timeouts{600, 0, 300});
  CHECK(policy.start_at == 1798077600);  // 2026-12-24T02:00:00Z (date -u -d ... +%s)
  CHECK(policy.time_zone == "Europe/Berlin");
  CHECK(policy.retry == RetryPolicy{3, 30, 600});

  auto shown = policy_json(policy);
  CHECK(shown == OJson::parse(R"({
    "wave_success": {"percent": 90.0, "then": "pause"},
    "wave_error": {"percent": 12.5},
    "abort_criteria": [{"kind": "refused", "percent": 10.0, "min_executed": 20},
                       {"kind": "timed_out", "percent": 5.0, "min_executed": 5}],
    "rate": {"base_per_minute": 10, "factor": 2.0, "increase_on": "succeeded", "every": 50, "max_per_minute": 200},
    "schedule": {"start_at": "2026-12-24T02:00:00Z", "windows": ["Mon-Fri 01:00-04:00"], "time_zone": "Europe/Berlin"},
    "retry": {"retries": 3, "backoff_seconds": 30, "backoff_max_seconds": 600},
    "timeouts": {"downloading": 600, "testing": 300}
  })"));
  // Stored and read back: the same policy, and the same text again.
  auto text = policy_text(policy);
  CHECK(policy_from_text(text) == policy);
  CHECK(policy_text(policy_from_text(text)) == text);
}

TEST_CASE("rollout_policy: no controls are all null, and empty stored text is no controls") {
  auto none = parse_policy(OJson::object());
  CHECK(none == RolloutPolicy{});
  CHECK(parse_policy(OJson::parse(R"({"wave_success": null, "rate": null})")) == RolloutPolicy{});
  CHECK(policy_json(none) == OJson::parse(R"({"wave_success": null, "wave_error": null, "abort_criteria": [],
      "rate": null, "schedule": null, "retry": null, "timeouts": null})"));
  CHECK(policy_from_text("") == RolloutPolicy{});
  CHECK(policy_from_text(policy_text(none)) == none);
}

TEST_CASE("rollout_policy: defaults fill what a control leaves out") {
  auto p = parse_policy(OJson::parse(R"({"wave_success": {"percent": 50}, "wave_error": {"count": 0},
      "rate": {"base_per_minute": 5}, "retry": {"retries": 1, "backoff_seconds": 7200},
      "schedule": {"windows": ["Sat 10:00-12:00"]}})"));
  CHECK_FALSE(p.wave.pause_on_success);
  CHECK(p.wave.error_count == 0);
  CHECK(p.rate.factor == 1.0);
  CHECK_FALSE(p.rate.on_succeeded);
  CHECK(p.rate.max_per_minute == 0);
  CHECK(p.retry == RetryPolicy{1, 7200, 7200});  // the maximum is never below the backoff
  CHECK(p.time_zone == "UTC");
  CHECK(p.start_at == 0);
  auto shown = policy_json(p);
  CHECK(shown["wave_success"]["then"] == "next");
  CHECK(shown["rate"]["max_per_minute"].is_null());
  CHECK(shown["schedule"]["start_at"].is_null());
  CHECK(shown["schedule"]["time_zone"] == "UTC");
  CHECK(policy_from_text(policy_text(p)) == p);
  CHECK(parse_policy(OJson::parse(R"({"retry": {"retries": 2}})")).retry ==
        RetryPolicy{2, default_retry_backoff, default_retry_backoff_max});
}

TEST_CASE("rollout_policy: each bad field is refused naming it") {
  CHECK(refusal(R"({"wave_success": 90})") == R"(field 'wave_success' must be an object {"percent": 90, "then": "next"})");
  CHECK(refusal(R"({"wave_success": {"percnt": 90}})") == "field 'wave_success.percnt' is not a known member");
  CHECK(refusal(R"({"wave_success": {"then": "next"}})") ==
        "field 'wave_success.percent' is required (the share of a wave's devices installed)");
  CHECK(refusal(R"({"wave_success": {"percent": 101}})") == "field 'wave_success.percent' must be a percentage 0..100");
  CHECK(refusal(R"({"wave_success": {"percent": "90"}})") == "field 'wave_success.percent' must be a percentage 0..100");
  CHECK(refusal(R"({"wave_success": {"percent": 90, "then": "stop"}})") ==
        R"(field 'wave_success.then' must be "next" (open the next wave) or "pause" (wait for a resume))");
  CHECK(refusal(R"({"wave_error": {"count": 1, "percent": 5}})") ==
        "field 'wave_error' takes exactly one of count (devices) and percent (share of the wave)");
  CHECK(refusal(R"({"wave_error": {}})") ==
        "field 'wave_error' takes exactly one of count (devices) and percent (share of the wave)");
  CHECK(refusal(R"({"wave_error": {"count": 1.5}})") == "field 'wave_error.count' must be a whole number 0..1000000");
  CHECK(refusal(R"({"abort_criteria": [{"kind": "exploded", "percent": 1}]})") ==
        "field 'abort_criteria[0].kind' must be one of failed, refused, rolled_back, timed_out");
  CHECK(refusal(R"({"abort_criteria": [{"kind": "failed", "percent": 1}, {"kind": "failed", "percent": 2}]})") ==
        "field 'abort_criteria[1].kind' names failed a second time");
  CHECK(refusal(R"({"abort_criteria": [{"kind": "failed"}]})") ==
        "field 'abort_criteria[0].percent' is required (the share of executed devices)");
  CHECK(refusal(R"({"abort_criteria": [{"kind": "failed", "percent": 1, "min_executed": 0}]})") ==
        "field 'abort_criteria[0].min_executed' must be a whole number 1..1000000");
  CHECK(refusal(R"({"timeouts": {}})").starts_with("field 'timeouts' must be an object of seconds per phase"));
  CHECK(refusal(R"({"timeouts": {"installing": 604801}})") == "field 'timeouts.installing' must be a whole number 1..604800");
  CHECK(refusal(R"({"rate": {"factor": 2}})") == "field 'rate.base_per_minute' is required (devices per minute, 1..1000)");
  CHECK(refusal(R"({"rate": {"base_per_minute": 10, "factor": 6, "every": 1}})") ==
        "field 'rate.factor' must be a number 1..5 (the rate is multiplied by it at each raise)");
  CHECK(refusal(R"({"rate": {"base_per_minute": 10, "factor": 2}})") ==
        "field 'rate.every' is required with a factor above 1 (raise the rate each time this many devices ...)");
  CHECK(refusal(R"({"rate": {"base_per_minute": 10, "max_per_minute": 5}})") ==
        "field 'rate.max_per_minute' must not be below rate.base_per_minute");
  CHECK(refusal(R"({"rate": {"base_per_minute": 10, "increase_on": "failed"}})") ==
        R"(field 'rate.increase_on' must be "notified" or "succeeded")");
  CHECK(refusal(R"({"schedule": {"start_at": "tomorrow"}})") ==
        "field 'schedule.start_at' must be a time with its zone, e.g. 2026-12-24T02:00:00Z or 2026-12-24T03:00:00+01:00");
  CHECK(refusal(R"({"schedule": {"start_at": "2026-12-24T02:00:00"}})").starts_with("field 'schedule.start_at'"));
  CHECK(refusal(R"({"schedule": {"time_zone": "Europe/Berlin"}})") ==
        "field 'schedule.time_zone' is for maintenance windows: give schedule.windows too");
  CHECK(refusal(R"({"schedule": {"windows": ["Mon"], "time_zone": "Mars/Olympus"}})") ==
        "field 'schedule.time_zone' must be a time zone of the service's database, an IANA name such as UTC or "
        "Europe/Berlin");
  CHECK(refusal(R"({"schedule": {"windows": []}})") ==
        R"(field 'schedule.windows' must be an array of 1..16 windows such as "Mon-Fri 01:00-04:00")");
  CHECK(refusal(R"({"schedule": {"windows": ["Someday 01:00-02:00"]}})").starts_with(
      "field 'schedule.windows[0]' is not a window: "));
  CHECK(refusal(R"({"retry": {"retries": 11}})") == "field 'retry.retries' must be a whole number 1..10");
  CHECK(refusal(R"({"retry": {"retries": 1, "backoff_seconds": 100, "backoff_max_seconds": 50}})") ==
        "field 'retry.backoff_max_seconds' must not be below retry.backoff_seconds");
  CHECK(refusal(R"({"retry": {"retries": 1, "jitter": true}})") == "field 'retry.jitter' is not a known member");
}

TEST_CASE("rollout_policy: the progress column keeps what changes as a rollout moves") {
  Rollout r;
  CHECK(progress_text(r) == "{}");
  r.wave_failure_baseline = 3;
  r.awaiting_approval = true;
  r.pause_reason = "wave 2 reached 90%";
  r.rate_steps = {{1766541600, 0}, {1766541900, 1}};
  auto text = progress_text(r);
  CHECK(text == R"({"wave_failure_baseline":3,"awaiting_approval":true,"pause_reason":"wave 2 reached 90%",)"
                R"("rate_steps":[[1766541600,0],[1766541900,1]]})");
  Rollout back;
  read_progress(back, text);
  CHECK(back.wave_failure_baseline == 3);
  CHECK(back.awaiting_approval);
  CHECK(back.pause_reason == "wave 2 reached 90%");
  CHECK(back.rate_steps == r.rate_steps);
  Rollout untouched;
  read_progress(untouched, "");
  CHECK(untouched == Rollout{});
}
