// A device's status in a deployment, a deployment's state, what an abort does to a device and why a failed attempt may be retried: an enum each,
// with one string mapping each way, as kiln-service stores them and its API, kiln-board-emu's agent and kiln
// speak them (docs/openapi.yaml AgentStatus, DeviceStatus, DeploymentState). Text from the wire is parsed once
// where it arrives; a name these functions do not know parses to nullopt, and the caller says what that means.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln {

// pending is never stored (admitted, nothing reported); notified, timed_out, retrying and revoked are recorded by
// the service. revoked: the device was revoked (kiln device revoke) before it finished; it left the deployment,
// counting neither as installed nor as failed, nor as admitted. unclaimed: likewise, the device was unclaimed or
// transferred to another tenant (kiln device unclaim, device transfer accept) before it finished.
enum class DeviceStatus {
  pending, notified, downloading, verifying, installing, testing, installed, failed, rolled_back, refused,
  timed_out, retrying, revoked, unclaimed
};
std::string status_name(DeviceStatus status);
std::optional<DeviceStatus> parse_status(std::string_view text);

// revoked or unclaimed: the device left the deployment before it finished (neither success nor failure).
// The text form parses first: a text that is no status has not left.
bool left_deployment(DeviceStatus status);
bool left_deployment(std::string_view status);
// failed, rolled_back, refused or timed_out. The text form parses first: a text that is no status is no failure.
bool is_failure_status(DeviceStatus status);
bool is_failure_status(std::string_view status);

// Device statuses an agent reports (docs/openapi.yaml AgentStatus): downloading .. refused.
bool is_agent_status(DeviceStatus status);
const std::vector<std::string>& agent_statuses();
// The statuses a deployment counts: the agent's, and those the service records (timed_out, notified, retrying,
// revoked, unclaimed), never reported.
const std::vector<std::string>& rollout_statuses();
// The failure kinds an abort criterion may name: failed, refused, rolled_back, timed_out.
const std::vector<std::string>& failure_kinds();
// What a deployment's device list may be filtered by (GET /v1/deployments/{id}/devices?status=, kiln deployment
// devices --status): pending, failures (any failure status), waiting_window (held outside its maintenance
// windows) or one of rollout_statuses().
constexpr std::string_view failures_filter = "failures";
constexpr std::string_view waiting_window_status = "waiting_window";
const std::vector<std::string>& device_status_filters();
// The phases a per-device timeout is set for: downloading, installing (verifying counts as installing), testing.
const std::vector<std::string>& timeout_phases();

// Only an active rollout moves by itself; active, paused and halted are open (devices still report; its images
// are in use), completed, aborted and superseded are finished.
enum class DeploymentState { active, paused, halted, completed, aborted, superseded };
std::string state_name(DeploymentState state);
std::optional<DeploymentState> parse_deployment_state(std::string_view text);
bool is_open(DeploymentState state);
// Nothing more happens without a person: completed, halted, aborted or superseded (a watch ends there).
bool is_settled(DeploymentState state);

// What aborting a deployment does to a device that took it (installed or testing): reverted (it already runs
// what it ran before), reverting (sent back when it checks in), unrevertable (nothing to send it back to).
enum class RevertState { reverted, reverting, unrevertable };
std::string revert_state_name(RevertState state);
std::optional<RevertState> parse_revert_state(std::string_view text);

// Why an agent's attempt failed when a later attempt may succeed (the agent says so in its failed report, field
// reason): a download cut or interrupted, the power lost while it installed.
enum class TransientReason { download_interrupted, power_loss };
std::string transient_reason_name(TransientReason reason);
std::optional<TransientReason> parse_transient_reason(std::string_view text);

}  // namespace kiln
