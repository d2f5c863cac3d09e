#include "provisioning/status.hpp"

#include <array>
#include <utility>

namespace kiln {
namespace {

constexpr std::array<std::pair<StepStatus, std::string_view>, 4> step_names{{
    {StepStatus::ok, "ok"},
    {StepStatus::skipped, "skipped"},
    {StepStatus::failed, "failed"},
    {StepStatus::would_run, "would-run"},
}};
constexpr std::array<std::pair<BoardStatus, std::string_view>, 4> board_names{{
    {BoardStatus::provisioned, "provisioned"},
    {BoardStatus::already_provisioned, "already-provisioned"},
    {BoardStatus::failed, "failed"},
    {BoardStatus::dry_run, "dry-run"},
}};

template <typename Enum, std::size_t N>
std::string_view name_in(const std::array<std::pair<Enum, std::string_view>, N>& table, Enum value) {
  for (const auto& entry : table)
    if (entry.first == value) return entry.second;
  return "?";
}

template <typename Enum, std::size_t N>
std::optional<Enum> value_in(const std::array<std::pair<Enum, std::string_view>, N>& table, std::string_view name) {
  for (const auto& entry : table)
    if (entry.second == name) return entry.first;
  return std::nullopt;
}

}  // namespace

std::string_view step_status_name(StepStatus result) { return name_in(step_names, result); }
std::optional<StepStatus> parse_step_status(std::string_view name) { return value_in(step_names, name); }
std::string_view board_status_name(BoardStatus result) { return name_in(board_names, result); }
std::optional<BoardStatus> parse_board_status(std::string_view name) { return value_in(board_names, name); }

}  // namespace kiln
