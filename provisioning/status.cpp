// The one string mapping of step and board statuses.
#include "provisioning/status.hpp"

#include "core/name_table.hpp"

namespace kiln {
namespace {

constexpr NameTable<StepStatus, 4> step_names{{
    {StepStatus::ok, "ok"},
    {StepStatus::skipped, "skipped"},
    {StepStatus::failed, "failed"},
    {StepStatus::would_run, "would-run"},
}};
constexpr NameTable<BoardStatus, 4> board_names{{
    {BoardStatus::provisioned, "provisioned"},
    {BoardStatus::already_provisioned, "already-provisioned"},
    {BoardStatus::failed, "failed"},
    {BoardStatus::dry_run, "dry-run"},
}};

}  // namespace

std::string_view step_status_name(StepStatus result) { return name_in(step_names, result); }
std::optional<StepStatus> parse_step_status(std::string_view name) { return value_in(step_names, name); }
std::string_view board_status_name(BoardStatus result) { return name_in(board_names, result); }
std::optional<BoardStatus> parse_board_status(std::string_view name) { return value_in(board_names, name); }

}  // namespace kiln
