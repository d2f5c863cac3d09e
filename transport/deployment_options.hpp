// `kiln deployment create` as written on a command line (percentages, durations, KIND:PERCENT criteria,
// maintenance windows) turned into the DeploymentRequest the API takes, and what ends a watch or an abort.
// Bad text is a usage error (exit 2) naming the option, before anything is sent.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "transport/service_api.hpp"

namespace kiln::transport {

struct DeploymentOptions {
  std::string group;
  std::vector<std::string> images;
  std::string manifest;
  std::string trust_update;  // a signed trust update file, instead of images
  std::string rollout = "100%";
  std::string step_after;
  std::string halt_on_failure;  // a percentage, or never
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
};

DeploymentRequest deployment_request(const DeploymentOptions& options);

// The rollout controls alone (docs/service.md, "Rollout controls"), as the API takes them.
Json rollout_controls(const DeploymentOptions& options);
// "1%,10%,50%,100%": cumulative whole percentages, increasing.
std::vector<int> parse_waves(const std::string& text);
// "30s", "5m", "1h", "2d", "500ms", or plain seconds; at most 366 days.
std::int64_t parse_duration_ms(const std::string& text, const char* option);
// 3600 -> "1h", 90 -> "90s", 120 -> "2m".
std::string duration_text(std::int64_t seconds);
// 5 -> "5%", 2.5 -> "2.5%".
std::string percent_text(double value);

// `deployment watch --interval`: parse_duration_ms, at least 100ms (Error(usage) otherwise).
int watch_interval_ms(const std::string& text);
// `deployment watch`: returns when the last view is completed; exit 8 (partial) when halted, 7 when aborted or
// superseded, with the reason and what to do.
void require_watch_completed(const Json& last);
// `deployment abort`: exit 8 naming the devices that cannot be sent back (up to 10), when there are any.
void require_all_reverted(const Json& answer);
// `deployment create --dry-run`: exit 3 with the reason when the deployment would be refused.
void require_would_create(const Json& plan);

}  // namespace kiln::transport
