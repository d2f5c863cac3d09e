// Tests for cli/provision_view: where a factory run's events and outcomes go. With -o jsonl each event is a line on
// stdout as it happens, then one "done" record per board; on a terminal a live table on stderr, one row per board
// redrawn in place; otherwise failures only, as details with --verbose, and the outcome table on stdout.
#include <doctest/doctest.h>

#include "cli/factory_views.hpp"
#include "cli/provision_view.hpp"
#include "tests/support/cli_context.hpp"

using namespace kiln;
using namespace kiln::cli;

namespace {

ProvisionEvent event(const std::string& board, const std::string& step, StepStatus result, const std::string& error = {}) {
  return ProvisionEvent{board, "uid-" + board, step, result, 5, error};
}

ProvisionOutcome outcome(const std::string& board, BoardStatus result) {
  ProvisionOutcome o;
  o.board = board;
  o.uid = "uid-" + board;
  o.result = result;
  o.duration_ms = 40;
  return o;
}

}  // namespace

TEST_CASE("provision_view: -o jsonl writes each event as it happens, then a done record per board") {
  Context ctx;
  ctx.global.output = "jsonl";
  test::finalize_detached(ctx, true);  // a terminal on stderr does not matter: the records are the output
  test::CapturedStream out(std::cout);
  test::CapturedStream err(std::cerr);
  ProvisionView view(ctx);
  auto sink = view.sink();
  sink(event("b1", "identity", StepStatus::ok));
  CHECK(out.text() == event_json(event("b1", "identity", StepStatus::ok)).dump() + "\n");
  sink(event("b2", "lock", StepStatus::failed, "board gone"));
  view.render_outcomes({outcome("b1", BoardStatus::provisioned), outcome("b2", BoardStatus::failed)});
  CHECK(out.text() ==
        event_json(event("b1", "identity", StepStatus::ok)).dump() + "\n" +
            event_json(event("b2", "lock", StepStatus::failed, "board gone")).dump() + "\n" +
            R"({"board":"b1","uid":"uid-b1","result":"provisioned","duration_ms":40,"step":"done"})" "\n"
            R"({"board":"b2","uid":"uid-b2","result":"failed","duration_ms":40,"step":"done"})" "\n");
  CHECK(err.text().empty());
}

TEST_CASE("provision_view: on a terminal, a live table on stderr with one escaped row per board, redrawn in place") {
  Context ctx;
  test::finalize_detached(ctx, true);
  test::CapturedStream err(std::cerr);
  test::CapturedStream out(std::cout);
  ProvisionView view(ctx);
  auto sink = view.sink();
  sink(event("b1", "identity", StepStatus::ok));
  CHECK(err.text() == "\r\x1b[2K" + event_table_line(event("b1", "identity", StepStatus::ok)) + "\n");
  sink(event("b2", "lock", StepStatus::failed, "\x1b]0;owned\a"));
  CHECK(err.text().ends_with("\x1b[1A\r\x1b[2K" + event_table_line(event("b1", "identity", StepStatus::ok)) +
                             "\n\r\x1b[2K" + terminal_safe(event_table_line(event("b2", "lock", StepStatus::failed,
                                                                                  "\x1b]0;owned\a"))) +
                             "\n"));
  CHECK(err.text().find("\x1b]0;") == std::string::npos);  // a board's text never reaches the terminal raw
  CHECK(out.text().empty());  // nothing on stdout until the outcomes
}

TEST_CASE("provision_view: without a terminal, only failures, as details with --verbose; outcomes as a table") {
  Context ctx;
  ctx.global.verbose = true;
  test::finalize_detached(ctx);
  test::CapturedStream err(std::cerr);
  test::CapturedStream out(std::cout);
  ProvisionView view(ctx);
  auto sink = view.sink();
  sink(event("b1", "identity", StepStatus::ok));
  sink(event("b1", "firmware", StepStatus::skipped));
  sink(event("b2", "lock", StepStatus::failed, "board gone"));
  CHECK(err.text() == "b2 lock: board gone\n");
  view.render_outcomes({outcome("b1", BoardStatus::provisioned)});
  CHECK(out.text().starts_with("BOARD"));
  CHECK(out.text().find("provisioned") != std::string::npos);
}
