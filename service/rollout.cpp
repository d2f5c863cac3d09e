// Staged-rollout rules shared by the deployment routes and the agent endpoints (no SQL, no HTTP here).
#include "service/rollout.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/bytes.hpp"
#include "signing/signer.hpp"

namespace kiln::service {

int rollout_bucket(std::string_view deployment, std::string_view device) {
  std::string key;
  key.append(deployment).append(":").append(device);
  Bytes h = digest(HashAlg::sha256, as_bytes(key));
  std::uint64_t value = 0;
  for (int i = 0; i < 8; ++i) value = (value << 8) | h[static_cast<std::size_t>(i)];
  return static_cast<int>(value % 100);
}

int wave_of_bucket(const std::vector<int>& waves, int bucket) {
  for (std::size_t i = 0; i < waves.size(); ++i)
    if (bucket < waves[i]) return static_cast<int>(i + 1);
  return 0;
}

bool failures_exceed(std::int64_t failures, std::int64_t admitted, double threshold_percent) {
  if (failures <= 0 || admitted <= 0) return false;
  return static_cast<double>(failures) * 100.0 > threshold_percent * static_cast<double>(admitted);
}

std::string percent_text(double percent) {
  double rounded = std::round(percent * 10.0) / 10.0;
  if (rounded == std::floor(rounded)) return fmt::format("{}%", static_cast<long long>(rounded));
  return fmt::format("{:.1f}%", rounded);
}

std::string halt_reason(std::int64_t failures, std::int64_t admitted, int wave, double threshold_percent) {
  double share = admitted > 0 ? static_cast<double>(failures) * 100.0 / static_cast<double>(admitted) : 0.0;
  return fmt::format("halted: {} of {} admitted devices failed ({}) in wave {}, above {}", failures, admitted,
                     percent_text(share), wave, percent_text(threshold_percent));
}

bool status_is(const std::optional<std::string>& stored, DeviceStatus status) {
  return stored && parse_status(*stored) == status;
}

std::int64_t retry_backoff(const RetryPolicy& retry, std::int64_t attempt) {
  std::int64_t wait = std::max<std::int64_t>(retry.backoff, 0);
  for (std::int64_t i = 1; i < attempt && wait < retry.backoff_max; ++i) wait *= 2;
  return retry.backoff_max > 0 ? std::min(wait, retry.backoff_max) : wait;
}

FailureOutcome after_failure(const RetryPolicy& retry, std::optional<TransientReason> reason, const std::string& detail,
                             std::int64_t attempt, std::int64_t now) {
  FailureOutcome out;
  if (!reason || retry.retries <= 0) {
    out.detail = detail;
    return out;
  }
  auto why = transient_reason_name(*reason) + (detail.empty() ? "" : ": " + detail);
  if (attempt > retry.retries) {
    out.detail = fmt::format("{} (attempt {} of {}: no retries left)", why, attempt, retry.retries + 1);
    return out;
  }
  auto wait = retry_backoff(retry, attempt);
  out.status = DeviceStatus::retrying;
  out.retry_at = now + wait;
  out.detail = fmt::format("{} (attempt {} of {}; retry in {} s)", why, attempt, retry.retries + 1, wait);
  return out;
}

std::string window_zone(const RolloutPolicy& policy, const std::optional<std::string>& device_zone) {
  if (device_zone && !device_zone->empty()) return *device_zone;
  return policy.time_zone.empty() ? "UTC" : policy.time_zone;
}

OfferDecision offer_decision(const Rollout& rollout, int wave, const DeviceProgress& device, std::int64_t now) {
  OfferDecision d;
  d.attempt = device.attempt;
  if (wave <= 0 || wave > rollout.wave) {
    d.hold = Hold::not_admitted;
    return d;
  }
  if (!rollout_started(rollout, now)) {
    d.hold = Hold::not_started;
    d.until = rollout.policy.start_at;
    return d;
  }
  auto status = device.status.value_or(DeviceStatus::pending);
  bool retrying = status == DeviceStatus::retrying;
  if (retrying && device.retry_at && now < *device.retry_at) {
    d.hold = Hold::retry_wait;
    d.until = device.retry_at;
    return d;
  }
  // Started attempts finish whatever the windows say; only a start (or a retry) waits for one.
  bool starting = status == DeviceStatus::pending || status == DeviceStatus::notified || retrying;
  auto& windows = rollout.policy.windows;
  if (starting && !windows.empty()) {
    auto zone = window_zone(rollout.policy, device.time_zone);
    if (!window_open(windows, zone, now)) {
      d.hold = Hold::window;
      d.until = next_window_open(windows, zone, now);
      return d;
    }
  }
  if (retrying) {
    d.attempt = device.attempt + 1;
    d.new_attempt = true;
  }
  return d;
}

std::optional<std::string> device_timeout(const Timeouts& timeouts, std::string_view status, std::int64_t since,
                                          std::int64_t now) {
  auto s = parse_status(status);
  std::int64_t limit = s == DeviceStatus::downloading                                  ? timeouts.downloading
                       : s == DeviceStatus::installing || s == DeviceStatus::verifying ? timeouts.installing
                       : s == DeviceStatus::testing                                    ? timeouts.testing
                                                                                       : 0;
  if (limit <= 0 || now - since <= limit) return std::nullopt;
  return fmt::format("no report for {} s while {}, above the {} s timeout", now - since, status, limit);
}

namespace {

std::map<std::string, std::int64_t> zero_counts() {
  std::map<std::string, std::int64_t> m;
  m.emplace(status_name(DeviceStatus::pending), 0);
  for (auto& s : rollout_statuses()) m.emplace(s, 0);
  return m;
}

}  // namespace

AdmittedCounts admitted_counts(const Rollout& rollout, const RolloutTally& tally) {
  AdmittedCounts c;
  c.devices = tally.devices;
  c.status = zero_counts();
  c.waves.resize(rollout.waves.size());
  for (auto& w : c.waves) w.status = zero_counts();
  for (std::size_t i = 0; i < tally.waves.size() && i < rollout.waves.size(); ++i) {
    const auto& wave = tally.waves[i];
    bool open = static_cast<int>(i + 1) <= rollout.wave;
    std::map<std::string, std::int64_t> counts;
    std::int64_t reported = 0;
    for (auto& [status, n] : wave.reported) {
      if (n <= 0) continue;
      counts[status] += n;
      reported += n;
    }
    if (open && wave.devices > reported) counts[status_name(DeviceStatus::pending)] += wave.devices - reported;
    for (auto& [status, n] : counts) {
      auto s = parse_status(status);
      if (s && left_deployment(*s)) {
        // Left the deployment: shown, never admitted (neither success nor failure toward halts).
        if (s == DeviceStatus::revoked) c.revoked += n;
        c.status[status] += n;
        for (auto w = i; w < c.waves.size(); ++w) c.waves[w].status[status] += n;
        continue;
      }
      c.admitted += n;
      c.status[status] += n;
      if (s && is_failure_status(*s)) c.failures += n;
      if (s == DeviceStatus::installed) c.installed += n;
      for (auto w = i; w < c.waves.size(); ++w) {
        c.waves[w].admitted += n;
        c.waves[w].status[status] += n;
      }
    }
  }
  return c;
}

bool wave_due(const Rollout& rollout, std::int64_t now) {
  return rollout.state == DeploymentState::active && rollout.wave < static_cast<int>(rollout.waves.size()) &&
         rollout.step_after > 0 && now >= rollout.wave_started_at + rollout.step_after;
}

double rate_per_minute(const RatePolicy& rate, int level) {
  double r = static_cast<double>(rate.base_per_minute) * std::pow(rate.factor, level);
  if (rate.max_per_minute > 0) r = std::min(r, static_cast<double>(rate.max_per_minute));
  return r;
}

std::int64_t rate_allowance(const RatePolicy& rate, const std::vector<RateStep>& steps, std::int64_t now) {
  if (rate.base_per_minute <= 0 || steps.empty()) return 0;
  double devices = 0;
  for (std::size_t i = 0; i < steps.size() && steps[i].at < now; ++i) {
    auto end = i + 1 < steps.size() ? std::min(steps[i + 1].at, now) : now;
    devices += rate_per_minute(rate, steps[i].level) * static_cast<double>(end - steps[i].at) / 60.0;
  }
  // Whole devices; a tiny epsilon keeps 0.1 * 600 from landing at 59.999.
  return 1 + static_cast<std::int64_t>(std::floor(devices + 1e-9));
}

WaveCounts open_wave_counts(const Rollout& rollout, const RolloutTally& tally) {
  WaveCounts c;
  auto i = static_cast<std::size_t>(std::max(rollout.wave, 1) - 1);
  if (i >= tally.waves.size()) return c;
  c.devices = tally.waves[i].devices;
  for (auto& [status, n] : tally.waves[i].reported) {
    auto s = parse_status(status);
    if (!s) continue;
    if (s == DeviceStatus::installed) c.installed += n;
    if (is_failure_status(*s)) c.failures += n;
    if (left_deployment(*s)) c.devices -= n;
  }
  c.devices = std::max<std::int64_t>(0, c.devices);
  c.failures = std::max<std::int64_t>(0, c.failures - rollout.wave_failure_baseline);
  return c;
}

namespace {

std::string plural(std::int64_t n, const char* one, const char* many) { return n == 1 ? one : many; }

// The abort reason of the first criterion crossed, if any.
std::optional<std::string> abort_reason(const Rollout& r, const AdmittedCounts& counts) {
  for (auto& c : r.policy.abort) {
    if (counts.executed() < c.min_executed) continue;
    auto it = counts.status.find(c.kind);
    std::int64_t n = it == counts.status.end() ? 0 : it->second;
    if (!failures_exceed(n, counts.executed(), c.percent)) continue;
    double share = static_cast<double>(n) * 100.0 / static_cast<double>(counts.executed());
    return fmt::format("aborted: {} of {} executed devices ended {} ({}), above the abort criterion {} {} "
                       "(once {} executed)",
                       n, counts.executed(), c.kind, percent_text(share), c.kind, percent_text(c.percent),
                       c.min_executed);
  }
  return std::nullopt;
}

// The halt reason of the open wave's error condition, if crossed.
std::optional<std::string> wave_error_reason(const Rollout& r, const WaveCounts& w) {
  auto& cond = r.policy.wave;
  if (cond.error_count && w.failures > *cond.error_count)
    return fmt::format("halted: {} {} of wave {} failed, above the wave error condition of {}", w.failures,
                       plural(w.failures, "device", "devices"), r.wave, *cond.error_count);
  if (cond.error_percent && failures_exceed(w.failures, w.devices, *cond.error_percent)) {
    double share = static_cast<double>(w.failures) * 100.0 / static_cast<double>(w.devices);
    return fmt::format("halted: {} of the {} devices of wave {} failed ({}), above the wave error condition of {}",
                       w.failures, w.devices, r.wave, percent_text(share), percent_text(*cond.error_percent));
  }
  return std::nullopt;
}

bool wave_succeeded(const Rollout& r, const WaveCounts& w) {
  auto& percent = r.policy.wave.success_percent;
  return percent && static_cast<double>(w.installed) * 100.0 >= *percent * static_cast<double>(w.devices);
}

}  // namespace

bool rollout_started(const Rollout& rollout, std::int64_t now) { return now >= rollout.policy.start_at; }

Rollout decide_rollout(const Rollout& rollout, const RolloutTally& tally, std::int64_t now) {
  Rollout next = rollout;
  if (next.state != DeploymentState::active || !rollout_started(next, now)) return next;
  while (true) {
    auto counts = admitted_counts(next, tally);
    // The rate is raised once per `every` devices notified (admitted devices that were offered it: any
    // status) or installed, from now on.
    auto& rate = next.policy.rate;
    if (rate.base_per_minute > 0 && rate.every > 0 && !next.rate_steps.empty()) {
      auto count =
          rate.on_succeeded ? counts.installed : counts.admitted - counts.status.at(status_name(DeviceStatus::pending));
      auto level = static_cast<int>(std::min<std::int64_t>(count / rate.every, 64));
      bool capped = rate.max_per_minute > 0 &&
                    rate_per_minute(rate, next.rate_steps.back().level) >= static_cast<double>(rate.max_per_minute);
      if (level > next.rate_steps.back().level && !capped) next.rate_steps.push_back({now, level});
    }
    if (auto reason = abort_reason(next, counts)) {
      next.state = DeploymentState::aborted;
      next.halt_reason = reason;
      return next;
    }
    auto failures = counts.failures - next.failure_baseline;
    if (next.halt_on_failure && counts.executed() >= next.halt_min_executed &&
        failures_exceed(failures, counts.admitted, *next.halt_on_failure)) {
      next.state = DeploymentState::halted;
      next.halt_reason = halt_reason(failures, counts.admitted, next.wave, *next.halt_on_failure);
      return next;
    }
    auto wave = open_wave_counts(next, tally);
    if (auto reason = wave_error_reason(next, wave)) {
      next.state = DeploymentState::halted;
      next.halt_reason = reason;
      return next;
    }
    bool last = next.wave >= static_cast<int>(next.waves.size());
    if (!last && next.policy.wave.success_percent) {
      // On success, no earlier than step_after after the wave opened.
      bool observed = next.step_after == 0 || now >= next.wave_started_at + next.step_after;
      if (observed && wave_succeeded(next, wave)) {
        auto installed = fmt::format("{} of {} installed", wave.installed, wave.devices);
        if (next.policy.wave.pause_on_success) {
          next.state = DeploymentState::paused;
          next.awaiting_approval = true;
          next.pause_reason = fmt::format("wave {} met its success condition ({}, at least {}): resume to open "
                                          "wave {}",
                                          next.wave, installed, percent_text(*next.policy.wave.success_percent),
                                          next.wave + 1);
          return next;
        }
        ++next.wave;
        next.wave_started_at = now;
        next.wave_failure_baseline = 0;
        continue;
      }
    } else if (!last && wave_due(next, now)) {
      // The wave opens when it was due; if nobody looked for a whole period (the service was down, no
      // device reported), it opens now, so that every wave is observed for step_after before the next.
      auto due = next.wave_started_at + next.step_after;
      ++next.wave;
      next.wave_started_at = now - due >= next.step_after ? now : due;
      next.wave_failure_baseline = 0;
      continue;
    }
    if (last && counts.admitted > 0 && counts.installed == counts.admitted) next.state = DeploymentState::completed;
    return next;
  }
}

Rollout resume_rollout(const Rollout& rollout, const RolloutTally& tally, std::int64_t now) {
  Rollout next = rollout;
  if (next.state != DeploymentState::paused && next.state != DeploymentState::halted) return next;
  next.failure_baseline = admitted_counts(next, tally).failures;
  Rollout open = next;
  open.wave_failure_baseline = 0;
  next.wave_failure_baseline = open_wave_counts(open, tally).failures;
  next.halt_reason.reset();
  next.pause_reason.reset();
  next.wave_started_at = now;
  if (next.awaiting_approval && next.wave < static_cast<int>(next.waves.size())) {
    ++next.wave;
    next.wave_failure_baseline = 0;
  }
  next.awaiting_approval = false;
  next.state = DeploymentState::active;
  return next;
}

}  // namespace kiln::service
