// What one provisioning step did to one board, and what a run did to one board: an enum each, with one
// string mapping each way, as the ledger, -o json and the live table show them.
#pragma once

#include <optional>
#include <string_view>

namespace kiln {

enum class StepStatus { ok, skipped, failed, would_run };
std::string_view step_status_name(StepStatus result);  // ok, skipped, failed, would-run
std::optional<StepStatus> parse_step_status(std::string_view name);

enum class BoardStatus { provisioned, already_provisioned, failed, dry_run };
std::string_view board_status_name(BoardStatus result);  // provisioned, already-provisioned, failed, dry-run
std::optional<BoardStatus> parse_board_status(std::string_view name);

}  // namespace kiln
