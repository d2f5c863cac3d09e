// Staged rollouts, the pure rules: per-device buckets, waves, the halt threshold and its reason.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::service {

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

// Device statuses an agent reports (docs/openapi.yaml AgentStatus), and which of them count as failures.
const std::vector<std::string>& agent_statuses();
bool is_failure_status(std::string_view status);

}  // namespace kiln::service
