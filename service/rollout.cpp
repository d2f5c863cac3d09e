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

const std::vector<std::string>& agent_statuses() {
  static const std::vector<std::string> statuses = {"downloading", "verifying", "installing",  "testing",
                                                    "installed",   "failed",    "rolled_back", "refused"};
  return statuses;
}

bool is_failure_status(std::string_view status) {
  return status == "failed" || status == "rolled_back" || status == "refused";
}

}  // namespace kiln::service
