// provisioning/status: one string per step and board status, each way.
#include <doctest/doctest.h>

#include <string>

#include "provisioning/status.hpp"

using namespace kiln;

TEST_CASE("step statuses map to their names and back") {
  for (auto status : {StepStatus::ok, StepStatus::skipped, StepStatus::failed, StepStatus::would_run}) {
    auto name = std::string(step_status_name(status));
    CHECK(name != "?");
    CHECK(parse_step_status(name) == status);
  }
  CHECK(step_status_name(StepStatus::would_run) == "would-run");
  CHECK_FALSE(parse_step_status("would_run").has_value());
  CHECK_FALSE(parse_step_status("").has_value());
  CHECK_FALSE(parse_step_status("OK").has_value());
}

TEST_CASE("board statuses map to their names and back") {
  for (auto status : {BoardStatus::provisioned, BoardStatus::already_provisioned, BoardStatus::failed, BoardStatus::dry_run}) {
    auto name = std::string(board_status_name(status));
    CHECK(name != "?");
    CHECK(parse_board_status(name) == status);
  }
  CHECK(board_status_name(BoardStatus::already_provisioned) == "already-provisioned");
  CHECK_FALSE(parse_board_status("provisioned ").has_value());
  CHECK_FALSE(parse_board_status("dry_run").has_value());
}
