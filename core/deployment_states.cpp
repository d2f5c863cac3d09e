// The one string mapping of device statuses, deployment states, revert states and transient failure reasons.
#include "core/deployment_states.hpp"

#include <algorithm>
#include <array>
#include <initializer_list>
#include <span>

#include "core/name_table.hpp"

namespace kiln {
namespace {

constexpr NameTable<DeviceStatus, 14> status_names{{
    {DeviceStatus::pending, "pending"},         {DeviceStatus::notified, "notified"},
    {DeviceStatus::downloading, "downloading"}, {DeviceStatus::verifying, "verifying"},
    {DeviceStatus::installing, "installing"},   {DeviceStatus::testing, "testing"},
    {DeviceStatus::installed, "installed"},     {DeviceStatus::failed, "failed"},
    {DeviceStatus::rolled_back, "rolled_back"}, {DeviceStatus::refused, "refused"},
    {DeviceStatus::timed_out, "timed_out"},     {DeviceStatus::retrying, "retrying"},
    {DeviceStatus::revoked, "revoked"},         {DeviceStatus::unclaimed, "unclaimed"},
}};
constexpr NameTable<DeploymentState, 6> state_names{{
    {DeploymentState::active, "active"},
    {DeploymentState::paused, "paused"},
    {DeploymentState::halted, "halted"},
    {DeploymentState::completed, "completed"},
    {DeploymentState::aborted, "aborted"},
    {DeploymentState::superseded, "superseded"},
}};
constexpr NameTable<RevertState, 3> revert_names{{
    {RevertState::reverted, "reverted"},
    {RevertState::reverting, "reverting"},
    {RevertState::unrevertable, "unrevertable"},
}};
constexpr NameTable<TransientReason, 2> reason_names{{
    {TransientReason::download_interrupted, "download_interrupted"},
    {TransientReason::power_loss, "power_loss"},
}};

constexpr std::array agent_reported = {DeviceStatus::downloading, DeviceStatus::verifying, DeviceStatus::installing,
                                       DeviceStatus::testing,     DeviceStatus::installed, DeviceStatus::failed,
                                       DeviceStatus::rolled_back, DeviceStatus::refused};

std::vector<std::string> names_of(std::span<const DeviceStatus> statuses) {
  std::vector<std::string> out;
  for (auto s : statuses) out.push_back(status_name(s));
  return out;
}

std::vector<std::string> names_of(std::initializer_list<DeviceStatus> statuses) {
  return names_of(std::span(statuses.begin(), statuses.size()));
}

}  // namespace

std::string status_name(DeviceStatus status) { return std::string(name_in(status_names, status)); }

std::optional<DeviceStatus> parse_status(std::string_view text) { return value_in(status_names, text); }

bool left_deployment(DeviceStatus status) {
  return status == DeviceStatus::revoked || status == DeviceStatus::unclaimed;
}

bool left_deployment(std::string_view status) {
  auto s = parse_status(status);
  return s && left_deployment(*s);
}

bool is_failure_status(DeviceStatus status) {
  return status == DeviceStatus::failed || status == DeviceStatus::rolled_back || status == DeviceStatus::refused ||
         status == DeviceStatus::timed_out;
}

bool is_failure_status(std::string_view status) {
  auto s = parse_status(status);
  return s && is_failure_status(*s);
}

bool is_agent_status(DeviceStatus status) {
  return std::find(agent_reported.begin(), agent_reported.end(), status) != agent_reported.end();
}

const std::vector<std::string>& agent_statuses() {
  static const auto statuses = names_of(agent_reported);
  return statuses;
}

const std::vector<std::string>& rollout_statuses() {
  static const auto statuses = [] {
    auto all = agent_statuses();
    for (auto& s : names_of({DeviceStatus::timed_out, DeviceStatus::notified, DeviceStatus::retrying,
                             DeviceStatus::revoked, DeviceStatus::unclaimed}))
      all.push_back(s);
    return all;
  }();
  return statuses;
}

const std::vector<std::string>& failure_kinds() {
  static const auto kinds =
      names_of({DeviceStatus::failed, DeviceStatus::refused, DeviceStatus::rolled_back, DeviceStatus::timed_out});
  return kinds;
}

const std::vector<std::string>& device_status_filters() {
  static const auto filters = [] {
    std::vector<std::string> all = {status_name(DeviceStatus::pending), std::string(failures_filter),
                                    std::string(waiting_window_status)};
    all.insert(all.end(), rollout_statuses().begin(), rollout_statuses().end());
    return all;
  }();
  return filters;
}

const std::vector<std::string>& timeout_phases() {
  static const auto phases = names_of({DeviceStatus::downloading, DeviceStatus::installing, DeviceStatus::testing});
  return phases;
}

std::string state_name(DeploymentState state) { return std::string(name_in(state_names, state)); }

std::optional<DeploymentState> parse_deployment_state(std::string_view text) { return value_in(state_names, text); }

bool is_open(DeploymentState state) {
  return state == DeploymentState::active || state == DeploymentState::paused || state == DeploymentState::halted;
}

bool is_settled(DeploymentState state) { return state != DeploymentState::active && state != DeploymentState::paused; }

std::string revert_state_name(RevertState state) { return std::string(name_in(revert_names, state)); }

std::optional<RevertState> parse_revert_state(std::string_view text) { return value_in(revert_names, text); }

std::string transient_reason_name(TransientReason reason) { return std::string(name_in(reason_names, reason)); }

std::optional<TransientReason> parse_transient_reason(std::string_view text) { return value_in(reason_names, text); }

}  // namespace kiln
