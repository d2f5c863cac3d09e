// Tests for core/deployment_states: every device status, deployment state and transient reason maps to its wire
// name and back, and text that is not exactly one of those names is refused (nullopt), never matched.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "core/deployment_states.hpp"

using namespace kiln;

TEST_CASE("deployment states: every device status round-trips through its wire name") {
  const std::vector<std::pair<DeviceStatus, std::string>> all = {
      {DeviceStatus::pending, "pending"},         {DeviceStatus::notified, "notified"},
      {DeviceStatus::downloading, "downloading"}, {DeviceStatus::verifying, "verifying"},
      {DeviceStatus::installing, "installing"},   {DeviceStatus::testing, "testing"},
      {DeviceStatus::installed, "installed"},     {DeviceStatus::failed, "failed"},
      {DeviceStatus::rolled_back, "rolled_back"}, {DeviceStatus::refused, "refused"},
      {DeviceStatus::timed_out, "timed_out"},     {DeviceStatus::retrying, "retrying"},
      {DeviceStatus::revoked, "revoked"},         {DeviceStatus::unclaimed, "unclaimed"},
  };
  for (const auto& [status, name] : all) {
    CHECK(status_name(status) == name);
    CHECK(parse_status(name) == status);
  }
  for (const char* unknown : {"", "Installed", "installed ", "rolled-back", "failures", "waiting_window", "?"})
    CHECK_FALSE(parse_status(unknown).has_value());
}

TEST_CASE("deployment states: the status lists are the documented ones, in the documented order") {
  CHECK(agent_statuses() == std::vector<std::string>{"downloading", "verifying", "installing", "testing", "installed",
                                                     "failed", "rolled_back", "refused"});
  CHECK(rollout_statuses() == std::vector<std::string>{"downloading", "verifying", "installing", "testing",
                                                       "installed", "failed", "rolled_back", "refused", "timed_out",
                                                       "notified", "retrying", "revoked", "unclaimed"});
  CHECK(failure_kinds() == std::vector<std::string>{"failed", "refused", "rolled_back", "timed_out"});
  CHECK(device_status_filters() ==
        std::vector<std::string>{"pending", "failures", "waiting_window", "downloading", "verifying", "installing",
                                 "testing", "installed", "failed", "rolled_back", "refused", "timed_out", "notified",
                                 "retrying", "revoked", "unclaimed"});
  CHECK(timeout_phases() == std::vector<std::string>{"downloading", "installing", "testing"});
  for (const auto& kind : failure_kinds()) CHECK(is_failure_status(kind));
  CHECK_FALSE(is_failure_status("no such status"));
  CHECK_FALSE(left_deployment("no such status"));
  CHECK(left_deployment(DeviceStatus::revoked));
  CHECK_FALSE(left_deployment(DeviceStatus::retrying));
}

TEST_CASE("deployment states: an agent reports downloading .. refused; the service records the rest") {
  std::vector<std::string> reported;
  for (int i = 0; i <= static_cast<int>(DeviceStatus::unclaimed); ++i) {
    auto status = static_cast<DeviceStatus>(i);
    if (is_agent_status(status)) reported.push_back(status_name(status));
  }
  CHECK(reported == agent_statuses());
  CHECK(is_agent_status(DeviceStatus::downloading));
  CHECK(is_agent_status(DeviceStatus::refused));
  for (auto recorded : {DeviceStatus::pending, DeviceStatus::notified, DeviceStatus::timed_out, DeviceStatus::retrying,
                        DeviceStatus::revoked, DeviceStatus::unclaimed})
    CHECK_FALSE(is_agent_status(recorded));
}

TEST_CASE("deployment states: every deployment state round-trips; the open and settled ones") {
  const std::vector<std::pair<DeploymentState, std::string>> all = {
      {DeploymentState::active, "active"},       {DeploymentState::paused, "paused"},
      {DeploymentState::halted, "halted"},       {DeploymentState::completed, "completed"},
      {DeploymentState::aborted, "aborted"},     {DeploymentState::superseded, "superseded"},
  };
  for (const auto& [state, name] : all) {
    CHECK(state_name(state) == name);
    CHECK(parse_deployment_state(name) == state);
  }
  for (const char* unknown : {"", "Active", "resumed", "complete", "open"})
    CHECK_FALSE(parse_deployment_state(unknown).has_value());
  CHECK(is_open(DeploymentState::halted));
  CHECK_FALSE(is_open(DeploymentState::completed));
  CHECK(is_settled(DeploymentState::halted));
  CHECK(is_settled(DeploymentState::superseded));
  CHECK_FALSE(is_settled(DeploymentState::active));
  CHECK_FALSE(is_settled(DeploymentState::paused));
}

TEST_CASE("deployment states: revert states round-trip; others are refused") {
  CHECK(revert_state_name(RevertState::reverted) == "reverted");
  CHECK(revert_state_name(RevertState::reverting) == "reverting");
  CHECK(revert_state_name(RevertState::unrevertable) == "unrevertable");
  for (auto state : {RevertState::reverted, RevertState::reverting, RevertState::unrevertable})
    CHECK(parse_revert_state(revert_state_name(state)) == state);
  CHECK_FALSE(parse_revert_state("irreversible").has_value());
  CHECK_FALSE(parse_revert_state("").has_value());
}

TEST_CASE("deployment states: transient reasons round-trip; others are refused") {
  CHECK(transient_reason_name(TransientReason::download_interrupted) == "download_interrupted");
  CHECK(transient_reason_name(TransientReason::power_loss) == "power_loss");
  CHECK(parse_transient_reason("download_interrupted") == TransientReason::download_interrupted);
  CHECK(parse_transient_reason("power_loss") == TransientReason::power_loss);
  CHECK_FALSE(parse_transient_reason("power-loss").has_value());
  CHECK_FALSE(parse_transient_reason("").has_value());
}
