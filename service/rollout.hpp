// Staged rollouts, the pure rules: per-device buckets, waves, the halt threshold and its reason.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/deployment_states.hpp"
#include "core/maintenance_window.hpp"

namespace kiln::service {

// A deployment's halt threshold unless its request says otherwise ("never" must be said): halt when more
// than 5 % of the admitted devices failed, once at least 5 devices finished (installed or failed).
constexpr double default_halt_percent = 5;
constexpr std::int64_t default_halt_min_executed = 5;

// A device's stable place in a deployment, 0..99: the first 8 bytes of SHA-256("DEPLOYMENT:DEVICE") as a
// big-endian integer, modulo 100. Different deployments pick different first-wave devices.
int rollout_bucket(std::string_view deployment, std::string_view device);

// The 1-based wave that admits `bucket` (waves are cumulative percentages, increasing), or 0 for none.
int wave_of_bucket(const std::vector<int>& waves, int bucket);

// True when `failures` among `admitted` devices are above `threshold_percent` (strictly).
bool failures_exceed(std::int64_t failures, std::int64_t admitted, double threshold_percent);

// "halted: 3 of 20 admitted devices failed (15%) in wave 2, above 5%"
std::string halt_reason(std::int64_t failures, std::int64_t admitted, int wave, double threshold_percent);

// A percentage for people: 15, 2.5, 33.3 (at most one decimal, no trailing zero).
std::string percent_text(double percent);

// Whether a status read from the store (nullopt: nothing recorded) is `status`.
bool status_is(const std::optional<std::string>& stored, DeviceStatus status);

// Per-wave conditions (hawkBit's group thresholds), over the open wave's own devices (those whose bucket
// falls in it): success opens the next wave (or pauses for a person), error halts the deployment.
struct WaveConditions {
  std::optional<double> success_percent;    // share of the wave's devices installed, 0..100
  bool pause_on_success = false;            // pause for a person (resume opens the next wave)
  std::optional<std::int64_t> error_count;  // halt when more than this many of the wave's devices failed
  std::optional<double> error_percent;      // halt when more than this share of the wave's devices failed
  bool operator==(const WaveConditions&) const = default;
};

// An abort criterion (AWS IoT Jobs' abortConfig): abort the deployment when more than `percent` of the
// executed (finished) admitted devices ended in `kind`, once at least `min_executed` devices finished.
struct AbortCriterion {
  std::string kind;  // failure_kinds() (core/deployment_states.hpp)
  double percent = 0;
  std::int64_t min_executed = 1;
  bool operator==(const AbortCriterion&) const = default;
};
constexpr std::int64_t default_abort_min_executed = 5;

// Per-device timeouts, seconds (0: none): a device whose last report is downloading, installing (or
// verifying) or testing, and older than that phase's timeout, is recorded timed_out, a failure.
struct Timeouts {
  std::int64_t downloading = 0, installing = 0, testing = 0;
  bool operator==(const Timeouts&) const = default;
};

// Exponential rate (AWS IoT Jobs' exponentialRate): devices are notified (first offered the deployment) at
// most `base_per_minute`, raised by `factor` each time another `every` devices were notified (or
// succeeded: installed), never above `max_per_minute` (0: no cap).
struct RatePolicy {
  std::int64_t base_per_minute = 0;  // 0: no rate control
  double factor = 1;
  bool on_succeeded = false;  // false: raised on notified devices
  std::int64_t every = 0;     // 0: never raised
  std::int64_t max_per_minute = 0;
  bool operator==(const RatePolicy&) const = default;
};
// When the rate was raised: unix seconds and the level from then on (rate = base * factor^level).
struct RateStep {
  std::int64_t at = 0;
  int level = 0;
  bool operator==(const RateStep&) const = default;
};
// Devices per minute at `level`.
double rate_per_minute(const RatePolicy& rate, int level);
// How many devices may have been notified by `now`: 1 + the devices per minute integrated over the steps
// (the first device at once, `base` in the first minute). Pure: time is an argument.
std::int64_t rate_allowance(const RatePolicy& rate, const std::vector<RateStep>& steps, std::int64_t now);

// Retries of transient failures with exponential backoff: after attempt N (1-based) failed transiently, the
// device waits backoff * 2^(N-1) seconds (at most backoff_max), then is offered the release again; a device
// whose last attempt (1 + retries) failed counts as failed, once.
struct RetryPolicy {
  std::int64_t retries = 0;  // attempts after the first, 1..10; 0: transient failures are failures
  std::int64_t backoff = 0, backoff_max = 0;  // seconds
  bool operator==(const RetryPolicy&) const = default;
};
constexpr std::int64_t default_retry_backoff = 60;        // seconds, when a request names none
constexpr std::int64_t default_retry_backoff_max = 3600;  // or the backoff, when above
// The wait after attempt `attempt` failed.
std::int64_t retry_backoff(const RetryPolicy& retry, std::int64_t attempt);

// What a failed report on attempt `attempt` becomes: retrying until retry_at (a transient reason and
// attempts left), or failed for good (the detail says after how many attempts when it was retried).
struct FailureOutcome {
  DeviceStatus status = DeviceStatus::failed;
  std::optional<std::int64_t> retry_at;  // with retrying
  std::string detail;
};
FailureOutcome after_failure(const RetryPolicy& retry, std::optional<TransientReason> reason, const std::string& detail,
                             std::int64_t attempt, std::int64_t now);

// The controls a deployment is created with (stored as one JSON policy, rollout_policy.hpp); they never
// change afterwards.
struct RolloutPolicy {
  WaveConditions wave;
  std::vector<AbortCriterion> abort;
  Timeouts timeouts;
  RatePolicy rate;
  std::int64_t start_at = 0;  // scheduled start, unix seconds (0: at creation); nothing is offered before it
  RetryPolicy retry;
  // Maintenance windows: a device starts (or retries) only while one is open, in its own time zone when it
  // has one, else in time_zone ("" : UTC). None: always.
  std::vector<MaintenanceWindow> windows;
  std::string time_zone;
  bool operator==(const RolloutPolicy&) const = default;
};

// What the rollout rules read and change of a deployment.
struct Rollout {
  DeploymentState state = DeploymentState::active;
  std::vector<int> waves;  // cumulative percentages, increasing
  int wave = 1;                 // the open wave, 1-based
  std::int64_t wave_started_at = 0;  // unix seconds
  std::int64_t step_after = 0;       // seconds; 0: waves do not open by themselves
  std::optional<double> halt_on_failure;
  std::int64_t halt_min_executed = 0;  // the threshold applies once this many admitted devices finished
  std::optional<std::string> halt_reason;
  std::int64_t failure_baseline = 0;  // failures forgiven by the last resume
  RolloutPolicy policy;
  // Kept as the rollout moves (the progress JSON column):
  std::int64_t wave_failure_baseline = 0;  // failures of the open wave forgiven by the last resume
  bool awaiting_approval = false;          // paused by the wave success condition: resume opens the next wave
  std::optional<std::string> pause_reason;
  std::vector<RateStep> rate_steps;  // with a rate: from creation (level 0), each raise appended
  bool operator==(const Rollout&) const = default;
};

// A deployment's group as the rules see it: devices by the wave their bucket puts them in, and the last
// status each reported for the deployment. Kept as reports arrive; it never depends on which waves are open.
struct RolloutTally {
  struct Wave {
    std::int64_t devices = 0;                      // devices of the group whose bucket falls in this wave
    std::map<std::string, std::int64_t> reported;  // agent status -> devices of this wave that reported it last
  };
  std::int64_t devices = 0;  // every device of the group, in a wave or not
  std::vector<Wave> waves;   // index 0: wave 1; as many as the rollout has
};

// The counts people and the rules read: admitted devices are those of the open waves, and any device of a
// later wave that reported anyway (admitted before a wave change), so nothing reported goes missing.
struct AdmittedCounts {
  struct Wave {
    std::int64_t admitted = 0;
    std::map<std::string, std::int64_t> status;  // agent statuses + "pending" (admitted, nothing reported)
  };
  std::int64_t devices = 0, admitted = 0, failures = 0, installed = 0;
  std::int64_t revoked = 0;  // devices revoked before they finished: left the deployment, not admitted
  std::int64_t executed() const { return failures + installed; }  // admitted devices with a final status
  std::map<std::string, std::int64_t> status;
  std::vector<Wave> waves;  // cumulative like the percentages: a device counts in its wave and every later one
};
AdmittedCounts admitted_counts(const Rollout& rollout, const RolloutTally& tally);

// The open wave's own devices (not the cumulative count): how many, installed, and failed (not forgiven).
struct WaveCounts {
  std::int64_t devices = 0, installed = 0, failures = 0;  // devices: without those revoked before they finished
};
WaveCounts open_wave_counts(const Rollout& rollout, const RolloutTally& tally);

// True when an active rollout's next wave is due at `now` by its timer (a rollout with a wave success
// condition opens its waves on success instead, no earlier than step_after).

bool wave_due(const Rollout& rollout, std::int64_t now);

// True once the rollout's scheduled start has come (always without one).
bool rollout_started(const Rollout& rollout, std::int64_t now);

// The one rollout decision: abort past an abort criterion, halt past the threshold or the wave error
// condition, open the next wave when its time or its success has come (or pause for a person), complete
// when the last wave is open and every admitted device installed. Pure: the same inputs, the same answer.
Rollout decide_rollout(const Rollout& rollout, const RolloutTally& tally, std::int64_t now);

// When a device that last reported `status` at `since` (unix seconds) has run out of its phase's timeout at
// `now`: the detail recorded with timed_out ("no report for 620 s while downloading, above the 600 s
// timeout"); nullopt while it has time, or for a status no timeout applies to.
std::optional<std::string> device_timeout(const Timeouts& timeouts, std::string_view status, std::int64_t since,
                                          std::int64_t now);

// The zone a device's windows are read in: its own when set, else the deployment's (UTC by default).
std::string window_zone(const RolloutPolicy& policy, const std::optional<std::string>& device_zone);

// What a device of the deployment is, as the offer rules see it.
struct DeviceProgress {
  std::optional<DeviceStatus> status;      // nullopt: nothing recorded (pending)
  std::int64_t attempt = 1;                // the attempt it is on
  std::optional<std::int64_t> retry_at;    // with retrying: not before
  std::optional<std::string> time_zone;    // the device's own zone
};
// Why a check-in gets no offer (none: it gets one).
enum class Hold { none, not_admitted, not_started, retry_wait, window };
struct OfferDecision {
  Hold hold = Hold::none;
  std::int64_t attempt = 1;        // the attempt the offer is for
  bool new_attempt = false;        // a retrying device starts its next attempt with this offer
  std::optional<std::int64_t> until;  // retry_wait: retry_at; window: when the next window opens
};
// Whether a device of `wave` (0: none) is offered the deployment at `now` (the rate is applied after it). A
// device that started an attempt finishes it whatever the windows say; one that has not, or waits to
// retry, starts only inside a window. Pure: time is an argument.
OfferDecision offer_decision(const Rollout& rollout, int wave, const DeviceProgress& device, std::int64_t now);

// A person resumes a paused or halted rollout at `now`: failures so far are forgiven, the open wave gets a
// fresh step_after period; one paused by its wave success condition opens the next wave.
Rollout resume_rollout(const Rollout& rollout, const RolloutTally& tally, std::int64_t now);

}  // namespace kiln::service
