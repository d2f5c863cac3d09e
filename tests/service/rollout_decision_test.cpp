// The rollout decision alone (service/rollout.hpp): a table of deployments, tallies and times, and what follows.
#include <doctest/doctest.h>

#include "service/rollout.hpp"

using namespace kiln;
using namespace kiln::service;

namespace {

// A wave of `devices` devices of which `reported` said something last.
RolloutTally::Wave wave(std::int64_t devices, std::map<std::string, std::int64_t> reported = {}) {
  return {devices, std::move(reported)};
}

Rollout rollout(std::vector<int> waves, int open, std::int64_t started, std::int64_t step_after,
                std::optional<double> halt = std::nullopt, std::int64_t baseline = 0, std::string state = "active") {
  Rollout r;
  r.state = parse_deployment_state(state).value();
  r.waves = std::move(waves);
  r.wave = open;
  r.wave_started_at = started;
  r.step_after = step_after;
  r.halt_on_failure = halt;
  r.failure_baseline = baseline;
  return r;
}

struct Case {
  const char* name;
  Rollout before;
  RolloutTally tally;
  std::int64_t now;
  // What follows:
  std::string state;
  int wave;
  std::int64_t wave_started_at;
  const char* halt_reason;             // nullptr: none
  const char* pause_reason = nullptr;  // nullptr: none
};

// decide_rollout on the case's deployment, tally and time gives what follows in the case, and again the same.
void check_decision(const Case& c) {
  INFO(c.name);
  auto after = decide_rollout(c.before, c.tally, c.now);
  CHECK(state_name(after.state) == c.state);
  CHECK(after.wave == c.wave);
  CHECK(after.wave_started_at == c.wave_started_at);
  CHECK(after.halt_reason == (c.halt_reason ? std::optional<std::string>(c.halt_reason) : std::nullopt));
  CHECK(after.pause_reason == (c.pause_reason ? std::optional<std::string>(c.pause_reason) : std::nullopt));
  CHECK(after.awaiting_approval == (c.pause_reason != nullptr));
  CHECK(decide_rollout(c.before, c.tally, c.now) == after);  // pure: the same inputs, the same answer
}

}  // namespace

TEST_CASE("rollout decision: a table of deployments, tallies and times") {
  const std::vector<Case> cases = {
      {"one wave, nothing reported: stays active", rollout({100}, 1, 1000, 0), {4, {wave(4)}}, 5000, "active", 1, 1000,
       nullptr},
      {"one wave, every admitted device installed: completed", rollout({100}, 1, 1000, 0),
       {3, {wave(3, {{"installed", 3}})}}, 1001, "completed", 1, 1000, nullptr},
      {"one wave, one device still installing: active", rollout({100}, 1, 1000, 0),
       {3, {wave(3, {{"installed", 2}, {"installing", 1}})}}, 1001, "active", 1, 1000, nullptr},
      {"an empty group never completes", rollout({100}, 1, 1000, 0), {0, {wave(0)}}, 9999, "active", 1, 1000, nullptr},
      {"two waves, before step_after: the first stays open", rollout({50, 100}, 1, 1000, 600),
       {4, {wave(2), wave(2)}}, 1599, "active", 1, 1000, nullptr},
      {"two waves, at step_after: the second opens when it was due", rollout({50, 100}, 1, 1000, 600),
       {4, {wave(2), wave(2)}}, 1600, "active", 2, 1600, nullptr},
      {"nobody looked for a whole period: the wave opens now", rollout({50, 100}, 1, 1000, 600),
       {4, {wave(2), wave(2)}}, 2300, "active", 2, 2300, nullptr},
      {"three waves, long silence: one wave opens (now), not all of them", rollout({10, 50, 100}, 1, 1000, 600),
       {4, {wave(1), wave(1), wave(2)}}, 3000, "active", 2, 3000, nullptr},
      {"three waves, looked at in time: the second opens when it was due", rollout({10, 50, 100}, 1, 1000, 600),
       {4, {wave(1), wave(1), wave(2)}}, 1700, "active", 2, 1600, nullptr},
      {"first wave installed, last wave not yet open: no completion", rollout({50, 100}, 1, 1000, 600),
       {4, {wave(2, {{"installed", 2}}), wave(2)}}, 1100, "active", 1, 1000, nullptr},
      {"last wave open and all installed, including an early reporter: completed", rollout({50, 100}, 2, 1000, 600),
       {4, {wave(2, {{"installed", 2}}), wave(2, {{"installed", 2}})}}, 1100, "completed", 2, 1000, nullptr},
      {"a wave opening re-counts: the new wave's pending devices block completion", rollout({50, 100}, 1, 1000, 600),
       {4, {wave(2, {{"installed", 2}}), wave(2)}}, 1600, "active", 2, 1600, nullptr},
      {"failures above the threshold halt", rollout({100}, 1, 1000, 0, 20.0), {10, {wave(10, {{"failed", 3}})}},
       1001, "halted", 1, 1000, "halted: 3 of 10 admitted devices failed (30%) in wave 1, above 20%"},
      {"failures at the threshold do not halt", rollout({100}, 1, 1000, 0, 20.0), {10, {wave(10, {{"failed", 2}})}},
       1001, "active", 1, 1000, nullptr},
      {"rolled_back and refused count as failures", rollout({100}, 1, 1000, 0, 20.0),
       {10, {wave(10, {{"rolled_back", 2}, {"refused", 1}})}}, 1001, "halted", 1, 1000,
       "halted: 3 of 10 admitted devices failed (30%) in wave 1, above 20%"},
      {"failures forgiven by a resume do not halt again", rollout({100}, 1, 1000, 0, 20.0, 3),
       {10, {wave(10, {{"failed", 3}})}}, 1001, "active", 1, 1000, nullptr},
      {"a new failure after a resume halts", rollout({100}, 1, 1000, 0, 5.0, 3), {10, {wave(10, {{"failed", 4}})}},
       1001, "halted", 1, 1000, "halted: 1 of 10 admitted devices failed (10%) in wave 1, above 5%"},
      {"a halt wins over a due wave", rollout({50, 100}, 1, 1000, 600, 10.0), {4, {wave(2, {{"failed", 1}}), wave(2)}},
       5000, "halted", 1, 1000, "halted: 1 of 2 admitted devices failed (50%) in wave 1, above 10%"},
      {"the threshold is taken over the admitted devices only", rollout({50, 100}, 1, 1000, 600, 40.0),
       {8, {wave(2, {{"failed", 1}}), wave(6)}}, 1001, "halted", 1, 1000,
       "halted: 1 of 2 admitted devices failed (50%) in wave 1, above 40%"},
      {"a paused deployment does not move", rollout({50, 100}, 1, 1000, 600, 1.0, 0, "paused"),
       {4, {wave(2, {{"failed", 2}}), wave(2)}}, 9999, "paused", 1, 1000, nullptr},
      {"a halted deployment does not move", rollout({100}, 1, 1000, 0, 1.0, 0, "halted"),
       {1, {wave(1, {{"installed", 1}})}}, 9999, "halted", 1, 1000, nullptr},
      {"a completed deployment stays completed", rollout({100}, 1, 1000, 0, 1.0, 0, "completed"),
       {1, {wave(1, {{"failed", 1}})}}, 9999, "completed", 1, 1000, nullptr},
      {"step_after 0: waves do not open by themselves", rollout({50, 100}, 1, 1000, 0), {4, {wave(2), wave(2)}},
       999999, "active", 1, 1000, nullptr},
  };
  for (const auto& c : cases) check_decision(c);
}

TEST_CASE("rollout decision: admitted counts take early reporters of later waves and are cumulative") {
  auto r = rollout({50, 100}, 1, 1000, 600);
  RolloutTally t{7, {wave(3, {{"installed", 1}, {"failed", 1}}), wave(3, {{"installed", 1}})}};
  auto c = admitted_counts(r, t);
  CHECK(c.devices == 7);
  CHECK(c.admitted == 4);  // three of wave 1, and wave 2's early reporter
  CHECK(c.failures == 1);
  CHECK(c.installed == 2);
  CHECK(c.status.at("pending") == 1);
  CHECK(c.status.at("installed") == 2);
  REQUIRE(c.waves.size() == 2);
  CHECK(c.waves[0].admitted == 3);
  CHECK(c.waves[0].status.at("pending") == 1);
  CHECK(c.waves[1].admitted == 4);
  CHECK(c.waves[1].status.at("installed") == 2);
  r.wave = 2;
  c = admitted_counts(r, t);
  CHECK(c.admitted == 6);
  CHECK(c.status.at("pending") == 3);
}

TEST_CASE("rollout decision: the halt threshold applies once its minimum of devices finished") {
  struct MinCase {
    const char* name;
    std::int64_t min_executed;
    std::map<std::string, std::int64_t> reported;  // of 20 admitted devices
    const char* state;
  };
  const MinCase cases[] = {
      {"2 failed of 2 finished, minimum 5: not yet", 5, {{"failed", 2}}, "active"},
      {"2 failed, 2 installed (4 finished), minimum 5: not yet", 5, {{"failed", 2}, {"installed", 2}}, "active"},
      {"2 failed, 3 installed (5 finished), minimum 5: halted", 5, {{"failed", 2}, {"installed", 3}}, "halted"},
      {"in progress does not count as finished", 5, {{"failed", 2}, {"installing", 10}}, "active"},
      {"refused and rolled back count as finished", 5, {{"refused", 3}, {"rolled_back", 2}}, "halted"},
      {"minimum 0 (deployments before the minimum existed): at once", 0, {{"failed", 2}}, "halted"},
      {"1 failed of 20 (5%) with 5 finished: at the default threshold, not above", 5, {{"failed", 1}, {"installed", 4}},
       "active"},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    auto r = rollout({100}, 1, 1000, 0, default_halt_percent);
    r.halt_min_executed = c.min_executed;
    auto after = decide_rollout(r, {20, {wave(20, c.reported)}}, 1001);
    CHECK(state_name(after.state) == c.state);
    CHECK(decide_rollout(r, {20, {wave(20, c.reported)}}, 1001) == after);
  }
}

namespace {

Rollout with_policy(Rollout r, RolloutPolicy p) {
  r.policy = std::move(p);
  return r;
}

RolloutPolicy success(double percent, bool pause = false) {
  RolloutPolicy p;
  p.wave.success_percent = percent;
  p.wave.pause_on_success = pause;
  return p;
}

RolloutPolicy wave_error(std::optional<std::int64_t> count, std::optional<double> percent) {
  RolloutPolicy p;
  p.wave.error_count = count;
  p.wave.error_percent = percent;
  return p;
}

RolloutPolicy abort_on(std::string kind, double percent, std::int64_t min_executed) {
  RolloutPolicy p;
  p.abort.push_back({std::move(kind), percent, min_executed});
  return p;
}

}  // namespace

TEST_CASE("rollout decision: wave success and error conditions, abort criteria (a table)") {
  const std::vector<Case> cases = {
      {"success below the share: the wave stays open (no timer)", with_policy(rollout({50, 100}, 1, 1000, 0), success(90)),
       {20, {wave(10, {{"installed", 8}}), wave(10)}}, 999999, "active", 1, 1000, nullptr, nullptr},
      {"success at the share: the next wave opens now", with_policy(rollout({50, 100}, 1, 1000, 0), success(90)),
       {20, {wave(10, {{"installed", 9}}), wave(10)}}, 1234, "active", 2, 1234, nullptr, nullptr},
      {"success counts the wave's own devices, not early reporters of later waves",
       with_policy(rollout({50, 100}, 1, 1000, 0), success(50)),
       {20, {wave(10, {{"installed", 4}}), wave(10, {{"installed", 6}})}}, 1234, "active", 1, 1000, nullptr, nullptr},
      {"success with step_after: not before the wave was observed that long",
       with_policy(rollout({50, 100}, 1, 1000, 600), success(50)), {4, {wave(2, {{"installed", 2}}), wave(2)}}, 1599,
       "active", 1, 1000, nullptr, nullptr},
      {"success with step_after: opens once both hold", with_policy(rollout({50, 100}, 1, 1000, 600), success(50)),
       {4, {wave(2, {{"installed", 2}}), wave(2)}}, 1700, "active", 2, 1700, nullptr, nullptr},
      {"success with step_after: the timer alone does not open it",
       with_policy(rollout({50, 100}, 1, 1000, 600), success(50)), {4, {wave(2), wave(2)}}, 99999, "active", 1, 1000,
       nullptr, nullptr},
      {"success, then pause: paused for a person, the wave stays", with_policy(rollout({50, 100}, 1, 1000, 0), success(90, true)),
       {20, {wave(10, {{"installed", 10}}), wave(10)}}, 1234, "paused", 1, 1000, nullptr,
       "wave 1 met its success condition (10 of 10 installed, at least 90%): resume to open wave 2"},
      {"success on the last wave: completion still waits for every device",
       with_policy(rollout({50, 100}, 2, 1000, 0), success(50, true)),
       {4, {wave(2, {{"installed", 2}}), wave(2, {{"installed", 1}})}}, 1234, "active", 2, 1000, nullptr, nullptr},
      {"a wave without devices succeeds at once, and the next opens", with_policy(rollout({1, 100}, 1, 1000, 0), success(100)),
       {3, {wave(0), wave(3)}}, 1001, "active", 2, 1001, nullptr, nullptr},
      {"successive successes open several waves in one look",
       with_policy(rollout({10, 50, 100}, 1, 1000, 0), success(100)),
       {3, {wave(1, {{"installed", 1}}), wave(1, {{"installed", 1}}), wave(1)}}, 1001, "active", 3, 1001, nullptr, nullptr},
      {"wave error count: at the count, not halted", with_policy(rollout({100}, 1, 1000, 0), wave_error(2, std::nullopt)),
       {20, {wave(20, {{"failed", 2}})}}, 1001, "active", 1, 1000, nullptr, nullptr},
      {"wave error count: one more halts", with_policy(rollout({100}, 1, 1000, 0), wave_error(2, std::nullopt)),
       {20, {wave(20, {{"failed", 1}, {"refused", 1}, {"rolled_back", 1}})}}, 1001, "halted", 1, 1000,
       "halted: 3 devices of wave 1 failed, above the wave error condition of 2", nullptr},
      {"wave error count 0: the first failure halts", with_policy(rollout({100}, 1, 1000, 0), wave_error(0, std::nullopt)),
       {20, {wave(20, {{"failed", 1}})}}, 1001, "halted", 1, 1000,
       "halted: 1 device of wave 1 failed, above the wave error condition of 0", nullptr},
      {"wave error share: over the wave's own devices", with_policy(rollout({50, 100}, 2, 1000, 0), wave_error(std::nullopt, 20.0)),
       {20, {wave(10, {{"failed", 1}}), wave(10, {{"failed", 3}})}}, 1001, "halted", 2, 1000,
       "halted: 3 of the 10 devices of wave 2 failed (30%), above the wave error condition of 20%", nullptr},
      {"wave error share: at the share, not halted", with_policy(rollout({50, 100}, 2, 1000, 0), wave_error(std::nullopt, 20.0)),
       {20, {wave(10, {{"failed", 5}}), wave(10, {{"failed", 2}})}}, 1001, "active", 2, 1000, nullptr, nullptr},
      {"wave error: the wave's forgiven failures do not count",
       [] {
         auto r = with_policy(rollout({100}, 1, 1000, 0), wave_error(0, std::nullopt));
         r.wave_failure_baseline = 2;
         return r;
       }(),
       {20, {wave(20, {{"failed", 2}})}}, 1001, "active", 1, 1000, nullptr, nullptr},
      {"abort: refused above its share of executed devices, past the minimum",
       with_policy(rollout({100}, 1, 1000, 0), abort_on("refused", 10, 5)),
       {20, {wave(20, {{"refused", 1}, {"installed", 4}, {"installing", 10}})}}, 1001, "aborted", 1, 1000,
       "aborted: 1 of 5 executed devices ended refused (20%), above the abort criterion refused 10% (once 5 executed)",
       nullptr},
      {"abort: below the minimum of executed devices, nothing",
       with_policy(rollout({100}, 1, 1000, 0), abort_on("refused", 10, 5)),
       {20, {wave(20, {{"refused", 1}, {"installed", 3}})}}, 1001, "active", 1, 1000, nullptr, nullptr},
      {"abort: other kinds do not count", with_policy(rollout({100}, 1, 1000, 0), abort_on("rolled_back", 10, 1)),
       {20, {wave(20, {{"refused", 3}, {"failed", 3}, {"installed", 3}})}}, 1001, "active", 1, 1000, nullptr, nullptr},
      {"abort: at the share exactly, nothing", with_policy(rollout({100}, 1, 1000, 0), abort_on("failed", 25, 4)),
       {20, {wave(20, {{"failed", 1}, {"installed", 3}})}}, 1001, "active", 1, 1000, nullptr, nullptr},
      {"abort wins over a halt", with_policy(rollout({100}, 1, 1000, 0, 5.0), abort_on("failed", 10, 1)),
       {10, {wave(10, {{"failed", 5}})}}, 1001, "aborted", 1, 1000,
       "aborted: 5 of 5 executed devices ended failed (100%), above the abort criterion failed 10% (once 1 executed)",
       nullptr},
      {"abort counts failures a resume forgave", with_policy(rollout({100}, 1, 1000, 0, std::nullopt, 5), abort_on("failed", 10, 1)),
       {10, {wave(10, {{"failed", 5}})}}, 1001, "aborted", 1, 1000,
       "aborted: 5 of 5 executed devices ended failed (100%), above the abort criterion failed 10% (once 1 executed)",
       nullptr},
      {"a paused deployment with controls does not move",
       with_policy(rollout({100}, 1, 1000, 0, std::nullopt, 0, "paused"), abort_on("failed", 0, 1)),
       {10, {wave(10, {{"failed", 5}})}}, 1001, "paused", 1, 1000, nullptr, nullptr},
  };
  for (const auto& c : cases) check_decision(c);
}

TEST_CASE("rollout decision: resuming forgives, and after a success pause opens the next wave") {
  RolloutTally t{20, {wave(10, {{"installed", 9}, {"failed", 1}}), wave(10)}};
  auto paused = decide_rollout(with_policy(rollout({50, 100}, 1, 1000, 0), success(90, true)), t, 1100);
  REQUIRE(state_name(paused.state) == "paused");
  auto resumed = resume_rollout(paused, t, 2000);
  CHECK(state_name(resumed.state) == "active");
  CHECK(resumed.wave == 2);
  CHECK(resumed.wave_started_at == 2000);
  CHECK_FALSE(resumed.awaiting_approval);
  CHECK_FALSE(resumed.pause_reason.has_value());
  CHECK(resumed.failure_baseline == 1);
  CHECK(resumed.wave_failure_baseline == 0);  // the new wave's own failures: none yet
  CHECK(state_name(decide_rollout(resumed, t, 2001).state) == "active");  // wave 2's success is not met: no pause again

  // A halt by the wave error condition: the resume forgives the open wave's failures, one more halts again.
  auto halted = decide_rollout(with_policy(rollout({100}, 1, 1000, 0), wave_error(0, std::nullopt)),
                               {5, {wave(5, {{"failed", 1}})}}, 1100);
  REQUIRE(state_name(halted.state) == "halted");
  auto again = resume_rollout(halted, {5, {wave(5, {{"failed", 1}})}}, 1200);
  CHECK(state_name(again.state) == "active");
  CHECK(again.wave == 1);
  CHECK(again.wave_failure_baseline == 1);
  CHECK(state_name(decide_rollout(again, {5, {wave(5, {{"failed", 1}})}}, 1300).state) == "active");
  CHECK(state_name(decide_rollout(again, {5, {wave(5, {{"failed", 2}})}}, 1300).state) == "halted");
  // Only paused and halted rollouts resume.
  CHECK(state_name(resume_rollout(rollout({100}, 1, 1000, 0, std::nullopt, 0, "aborted"), t, 5000).state) == "aborted");
}

TEST_CASE("rollout decision: per-device timeouts by phase (a table); timed_out is a failure") {
  Timeouts t{600, 900, 0};
  struct TimeoutCase {
    const char* status;
    std::int64_t since, now;
    const char* detail;  // nullptr: still has time
  };
  const TimeoutCase cases[] = {
      {"downloading", 1000, 1600, nullptr},  // exactly the timeout: not above
      {"downloading", 1000, 1601, "no report for 601 s while downloading, above the 600 s timeout"},
      {"verifying", 1000, 1900, nullptr},
      {"verifying", 1000, 1901, "no report for 901 s while verifying, above the 900 s timeout"},
      {"installing", 1000, 5000, "no report for 4000 s while installing, above the 900 s timeout"},
      {"testing", 1000, 999999, nullptr},  // no testing timeout
      {"installed", 1000, 999999, nullptr},
      {"failed", 1000, 999999, nullptr},
      {"timed_out", 1000, 999999, nullptr},
  };
  for (const auto& c : cases) {
    INFO(c.status << " since " << c.since << " at " << c.now);
    auto detail = device_timeout(t, c.status, c.since, c.now);
    CHECK(detail == (c.detail ? std::optional<std::string>(c.detail) : std::nullopt));
  }
  CHECK_FALSE(device_timeout(Timeouts{}, "downloading", 0, 1 << 30).has_value());
  CHECK(is_failure_status("timed_out"));

  // timed_out counts in the halt threshold and in its own abort criterion.
  auto halted = decide_rollout(rollout({100}, 1, 1000, 0, 10.0), {10, {wave(10, {{"timed_out", 2}})}}, 1001);
  CHECK(state_name(halted.state) == "halted");
  CHECK(halted.halt_reason == "halted: 2 of 10 admitted devices failed (20%) in wave 1, above 10%");
  auto aborted = decide_rollout(with_policy(rollout({100}, 1, 1000, 0), abort_on("timed_out", 0, 1)),
                                {10, {wave(10, {{"timed_out", 1}, {"failed", 3}})}}, 1001);
  CHECK(state_name(aborted.state) == "aborted");
  CHECK(aborted.halt_reason ==
        "aborted: 1 of 4 executed devices ended timed_out (25%), above the abort criterion timed_out 0% (once 1 "
        "executed)");
  CHECK(admitted_counts(rollout({100}, 1, 1000, 0), {3, {wave(3, {{"timed_out", 1}})}}).status.at("timed_out") == 1);
}

TEST_CASE("rollout decision: the exponential rate — devices allowed over time follow the rule (a table)") {
  RatePolicy flat{10, 1, false, 0, 0};           // 10 per minute
  RatePolicy doubling{6, 2, false, 5, 0};        // 6 per minute, doubled each 5 notified
  RatePolicy capped{6, 3, true, 2, 20};          // x3 each 2 succeeded, at most 20 per minute
  struct RateCase {
    const char* name;
    RatePolicy rate;
    std::vector<RateStep> steps;
    std::int64_t now;
    std::int64_t allowed;
  };
  const RateCase cases[] = {
      {"at creation: the first device at once", flat, {{1000, 0}}, 1000, 1},
      {"5.9 s of 10/min: still one", flat, {{1000, 0}}, 1005, 1},
      {"6 s of 10/min: two", flat, {{1000, 0}}, 1006, 2},
      {"59 s: ten", flat, {{1000, 0}}, 1059, 10},
      {"one minute: eleven (ten in the first minute, after the first)", flat, {{1000, 0}}, 1060, 11},
      {"ten minutes: 101", flat, {{1000, 0}}, 1600, 101},
      {"before creation: the first only", flat, {{1000, 0}}, 900, 1},
      {"no steps (no rate): nothing", flat, {}, 5000, 0},
      {"doubled after a minute: 6 in the first, 12 per minute after", doubling, {{1000, 0}, {1060, 1}}, 1120, 19},
      {"doubled twice: 6 + 12 + 24", doubling, {{1000, 0}, {1060, 1}, {1120, 2}}, 1180, 43},
      {"a raise in the future of `now` does not count", doubling, {{1000, 0}, {1060, 1}}, 1030, 4},
      {"capped: 6, then min(18, 20), then min(54, 20)", capped, {{1000, 0}, {1060, 1}, {1120, 2}}, 1180, 45},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    CHECK(rate_allowance(c.rate, c.steps, c.now) == c.allowed);
  }
  CHECK(rate_per_minute(doubling, 3) == 48);
  CHECK(rate_per_minute(capped, 5) == 20);

  // The decision raises the rate when another `every` devices were notified (any status) or succeeded.
  auto r = rollout({100}, 1, 1000, 0);
  r.policy.rate = doubling;
  r.rate_steps = {{1000, 0}};
  auto same = decide_rollout(r, {20, {wave(20, {{"notified", 3}, {"installed", 1}})}}, 1100);
  CHECK(same.rate_steps == std::vector<RateStep>{{1000, 0}});  // 4 notified: below 5
  auto raised = decide_rollout(r, {20, {wave(20, {{"notified", 3}, {"downloading", 1}, {"failed", 1}})}}, 1100);
  CHECK(raised.rate_steps == std::vector<RateStep>{{1000, 0}, {1100, 1}});
  CHECK(decide_rollout(raised, {20, {wave(20, {{"notified", 9}})}}, 1200).rate_steps ==
        std::vector<RateStep>{{1000, 0}, {1100, 1}});  // 9: still level 1
  CHECK(decide_rollout(raised, {20, {wave(20, {{"notified", 10}, {"installed", 5}})}}, 1200).rate_steps ==
        std::vector<RateStep>{{1000, 0}, {1100, 1}, {1200, 3}});  // 15 notified: level 3 at once
  // On succeeded: only installed devices raise it; at the cap it is raised no more.
  auto s = rollout({100}, 1, 1000, 0);
  s.policy.rate = capped;
  s.rate_steps = {{1000, 0}};
  CHECK(decide_rollout(s, {20, {wave(20, {{"notified", 10}, {"installed", 1}})}}, 1100).rate_steps.size() == 1);
  auto up = decide_rollout(s, {20, {wave(20, {{"installed", 2}})}}, 1100);
  CHECK(up.rate_steps == std::vector<RateStep>{{1000, 0}, {1100, 1}});
  auto at_cap = decide_rollout(up, {20, {wave(20, {{"installed", 4}})}}, 1200);
  CHECK(at_cap.rate_steps == std::vector<RateStep>{{1000, 0}, {1100, 1}, {1200, 2}});  // 54 > 20: capped level
  CHECK(decide_rollout(at_cap, {20, {wave(20, {{"installed", 8}})}}, 1300).rate_steps.size() == 3);
}

TEST_CASE("rollout decision: nothing moves before the scheduled start") {
  auto r = rollout({50, 100}, 1, 5000, 60, 10.0);
  r.policy.start_at = 5000;
  RolloutTally failing{4, {wave(2, {{"failed", 2}}), wave(2)}};
  CHECK_FALSE(rollout_started(r, 4999));
  CHECK(decide_rollout(r, failing, 4999) == r);  // before: no halt, no wave
  CHECK(rollout_started(r, 5000));
  CHECK(state_name(decide_rollout(r, failing, 5000).state) == "halted");
  RolloutTally quiet{4, {wave(2), wave(2)}};
  CHECK(decide_rollout(r, quiet, 5059).wave == 1);
  CHECK(decide_rollout(r, quiet, 5060).wave == 2);  // step_after counts from the start
  CHECK(rollout_started(rollout({100}, 1, 0, 0), 0));  // no schedule: started
}

TEST_CASE("rollout decision: statuses have one name each, and back") {
  for (auto s : {DeviceStatus::pending, DeviceStatus::notified, DeviceStatus::downloading, DeviceStatus::verifying,
                 DeviceStatus::installing, DeviceStatus::testing, DeviceStatus::installed, DeviceStatus::failed,
                 DeviceStatus::rolled_back, DeviceStatus::refused, DeviceStatus::timed_out, DeviceStatus::retrying})
    CHECK(parse_status(status_name(s)) == s);
  CHECK_FALSE(parse_status("exploded").has_value());
  CHECK(status_name(DeviceStatus::retrying) == "retrying");
  CHECK_FALSE(is_failure_status("retrying"));  // a device waiting to retry has not failed (yet)
  CHECK(is_failure_status("timed_out"));
  for (auto r : {TransientReason::download_interrupted, TransientReason::power_loss})
    CHECK(parse_transient_reason(transient_reason_name(r)) == r);
  CHECK_FALSE(parse_transient_reason("bad_signature").has_value());
}

TEST_CASE("rollout decision: the backoff doubles from its first wait up to its cap (a table)") {
  struct Case {
    RetryPolicy retry;
    std::int64_t attempt, wait;
  };
  const Case cases[] = {
      {{3, 30, 600}, 1, 30},  {{3, 30, 600}, 2, 60},   {{3, 30, 600}, 3, 120},  {{10, 30, 600}, 5, 480},
      {{10, 30, 600}, 6, 600}, {{10, 30, 600}, 10, 600}, {{10, 30, 45}, 2, 45},  {{2, 60, 60}, 2, 60},
      {{10, 86400, 604800}, 10, 604800},
  };
  for (auto& c : cases) {
    INFO("backoff " << c.retry.backoff << " max " << c.retry.backoff_max << " attempt " << c.attempt);
    CHECK(retry_backoff(c.retry, c.attempt) == c.wait);
  }
}

TEST_CASE("rollout decision: a failure becomes retrying while attempts are left, else failed (a table)") {
  const RetryPolicy two{2, 30, 100};
  struct Case {
    const char* name;
    RetryPolicy retry;
    std::optional<TransientReason> reason;
    std::int64_t attempt;
    DeviceStatus status;
    std::optional<std::int64_t> retry_at;  // from now = 1000
    const char* detail_has;
  };
  const Case cases[] = {
      {"first transient failure", two, TransientReason::download_interrupted, 1, DeviceStatus::retrying, 1030,
       "download_interrupted: cut (attempt 1 of 3; retry in 30 s)"},
      {"second, the wait doubled", two, TransientReason::power_loss, 2, DeviceStatus::retrying, 1060,
       "power_loss: cut (attempt 2 of 3; retry in 60 s)"},
      {"last attempt: failed, once", two, TransientReason::download_interrupted, 3, DeviceStatus::failed, std::nullopt,
       "(attempt 3 of 3: no retries left)"},
      {"not transient: never retried", two, std::nullopt, 1, DeviceStatus::failed, std::nullopt, "cut"},
      {"no retry policy", RetryPolicy{}, TransientReason::download_interrupted, 1, DeviceStatus::failed, std::nullopt,
       "cut"},
  };
  for (auto& c : cases) {
    INFO(c.name);
    auto out = after_failure(c.retry, c.reason, "cut", c.attempt, 1000);
    CHECK(out.status == c.status);
    CHECK(out.retry_at == c.retry_at);
    CHECK(out.detail.find(c.detail_has) != std::string::npos);
  }
}

TEST_CASE("rollout decision: who is offered at check-in — waves, start, retry waits, windows in the device's zone") {
  auto r = rollout({50, 100}, 1, 0, 60);
  std::string why;
  r.policy.windows = {*kiln::parse_maintenance_window("Mon-Fri 01:00-04:00", why)};
  r.policy.time_zone = "UTC";
  r.policy.retry = {3, 30, 600};
  // 2026-12-07 is a Monday.
  const std::int64_t mon_0200 = 1796601600 + 2 * 3600, mon_0500 = 1796601600 + 5 * 3600;
  auto pending = DeviceProgress{};
  auto downloading = DeviceProgress{DeviceStatus::downloading, 1, std::nullopt, std::nullopt};
  auto retrying = DeviceProgress{DeviceStatus::retrying, 1, mon_0200 + 30, std::nullopt};
  auto berlin = DeviceProgress{std::nullopt, 1, std::nullopt, std::string("Europe/Berlin")};  // UTC+1 in December
  auto tokyo = DeviceProgress{std::nullopt, 1, std::nullopt, std::string("Asia/Tokyo")};      // UTC+9
  struct Case {
    const char* name;
    int wave;
    DeviceProgress device;
    std::int64_t now;
    Hold hold;
    std::int64_t attempt;
    std::optional<std::int64_t> until;
  };
  const Case cases[] = {
      {"in the window", 1, pending, mon_0200, Hold::none, 1, std::nullopt},
      {"a later wave", 2, pending, mon_0200, Hold::not_admitted, 1, std::nullopt},
      {"no wave", 0, pending, mon_0200, Hold::not_admitted, 1, std::nullopt},
      {"outside: until Tuesday 01:00", 1, pending, mon_0500, Hold::window, 1, 1796601600 + 86400 + 3600},
      {"started attempts finish outside", 1, downloading, mon_0500, Hold::none, 1, std::nullopt},
      {"waiting to retry", 1, retrying, mon_0200 + 29, Hold::retry_wait, 1, mon_0200 + 30},
      {"retry due: attempt 2", 1, retrying, mon_0200 + 30, Hold::none, 2, std::nullopt},
      {"retry due, window closed", 1, DeviceProgress{DeviceStatus::retrying, 1, mon_0200, std::nullopt}, mon_0500,
       Hold::window, 1, 1796601600 + 86400 + 3600},
      // 02:00 UTC is 03:00 in Berlin (inside) and 11:00 in Tokyo (outside); 05:00 UTC is 06:00 / 14:00.
      {"the device's zone wins (inside)", 1, berlin, mon_0200, Hold::none, 1, std::nullopt},
      {"the device's zone wins (outside)", 1, tokyo, mon_0200, Hold::window, 1, 1796601600 + 86400 + 3600 - 9 * 3600},
  };
  for (auto& c : cases) {
    INFO(c.name);
    auto d = offer_decision(r, c.wave, c.device, c.now);
    CHECK(d.hold == c.hold);
    CHECK(d.attempt == c.attempt);
    CHECK(d.new_attempt == (c.hold == Hold::none && c.attempt == 2));
    CHECK(d.until == c.until);
  }
  // Before the scheduled start nobody is offered; without windows everybody admitted is.
  auto later = r;
  later.policy.start_at = mon_0200 + 1;
  CHECK(offer_decision(later, 1, pending, mon_0200).hold == Hold::not_started);
  auto anytime = r;
  anytime.policy.windows.clear();
  CHECK(offer_decision(anytime, 1, pending, mon_0500).hold == Hold::none);
  CHECK(window_zone(r.policy, std::nullopt) == "UTC");
  CHECK(window_zone(r.policy, std::string("Asia/Tokyo")) == "Asia/Tokyo");
}
