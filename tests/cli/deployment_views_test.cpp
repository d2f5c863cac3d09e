// Tests for cli/deployment_views: the summary and wave rows of one deployment, the dry-run plan and the list,
// rendered as JSON and read back (exact texts), and the watch view's one-object-per-line and table forms.
#include <doctest/doctest.h>

#include <sstream>

#include "cli/context.hpp"
#include "cli/deployment_views.hpp"
#include "tests/support/captured_output.hpp"

using namespace kiln;
using namespace kiln::cli;

namespace {

Json full_deployment() {
  return Json{{"id", "dep-7"},
              {"group", "thermo/eu"},
              {"state", "halted"},
              {"halt_reason", "3 failed devices in wave 1"},
              {"images", Json::array({"img-1"})},
              {"manifest", nullptr},
              {"sequence", 12},
              {"wave", 1},
              {"waves", Json::array({Json{{"wave", 1}, {"percent", 10}, {"state", "halted"}, {"admitted", 4},
                                          {"status", {{"installed", 1}, {"failed", 3}}}},
                                     Json{{"wave", 2}, {"percent", 100}, {"state", "waiting"}, {"admitted", 0},
                                          {"status", Json::object()}}})},
              {"rollout", 10},
              {"step_after", 5400},
              {"next_wave_at", nullptr},
              {"halt_on_failure", 12.5},
              {"halt_min_executed", 4},
              {"wave_success", {{"percent", 90}, {"then", "pause"}}},
              {"wave_error", {{"count", 2}}},
              {"abort_criteria", Json::array({Json{{"kind", "failed"}, {"percent", 20}, {"min_executed", 10}}})},
              {"timeouts", {{"download", 600}, {"install", 90}}},
              {"rate", {{"base_per_minute", 5}, {"factor", 2.0}, {"every", 10}, {"increase_on", "success"},
                        {"max_per_minute", 40}}},
              {"rate_now", {{"per_minute", 10.0}, {"notified", 7}, {"allowed", 8}}},
              {"schedule", {{"start_at", "2026-12-01T00:00:00Z"}, {"windows", Json::array({"Mon-Fri 01:00-04:00"})},
                            {"time_zone", "Europe/Berlin"}}},
              {"window_open", false},
              {"next_window_at", "2026-12-08T00:00:00Z"},
              {"waiting_window", 3},
              {"retry", {{"retries", 2}, {"backoff_seconds", 30}, {"backoff_max_seconds", 3600}}},
              {"devices", 40},
              {"admitted", 4},
              {"failures", 3},
              {"failures_forgiven", 1},
              {"device_status", {{"failed", 3}, {"installed", 1}, {"pending", 0}}},
              {"previous", "dep-6"},
              {"attention", "wave 1 halted"},
              {"silent_devices", Json::array({"A1", "B2"})},
              {"silent", 5},
              {"revert", {{"reverting", 2}, {"unrevertable", 1}}},
              {"created_at", "2026-12-01T00:00:00Z"}};
}

std::pair<Json, Json> read_two(const std::string& text) {
  std::istringstream in(text);
  Json first, second;
  in >> first >> second;
  return {first, second};
}

// A dry run's answer: two waves, one failed check.
Json refused_plan() {
  return {{"would_create", false},
          {"group", "thermo/eu"},
          {"devices", 12},
          {"waves", Json::array({Json{{"wave", 1}, {"percent", 25}, {"devices", Json::array({"A", "B", "C"})}},
                                 Json{{"wave", 2}, {"percent", 100}, {"devices", Json::array({"D"})}}})},
          {"rollout", {{"halt_on_failure", 10}, {"halt_min_executed", 3}, {"timeouts", {{"install", 7200}}}}},
          {"checks", Json::array({Json{{"check", "image signed by a boot key"}, {"passed", true}, {"detail", ""}},
                                  Json{{"check", "sequence"}, {"passed", false}, {"detail", "12 is not above 12"}}})}};
}

}  // namespace

TEST_CASE("deployment_views: every control of a deployment is summarised in words") {
  auto parts = read_two(deployment_table_text(full_deployment(), RenderOptions{OutputFormat::json}));
  auto& summary = parts.first;
  auto& waves = parts.second;
  CHECK(summary["id"] == "dep-7");
  CHECK(summary["reason"] == "3 failed devices in wave 1");
  CHECK(summary["carries"] == "release");
  CHECK(summary["manifest"] == "-");
  CHECK(summary["sequence"] == 12);
  CHECK(summary["wave"] == "1 of 2 (10%)");
  CHECK(summary["step_after"] == "90m");
  CHECK_FALSE(summary.contains("next_wave_at"));
  CHECK(summary["halt_on_failure"] == "12.5% (once 4 devices finished)");
  CHECK(summary["wave_success"] == "90% of a wave installed, then pause for a resume");
  CHECK(summary["wave_error"] == "halt above 2 failed devices in a wave");
  CHECK(summary["abort_criteria"] == "failed above 20% (once 10 executed)");
  CHECK(summary["timeouts"] == "download 10m, install 90s (then timed_out, a failure)");
  CHECK(summary["rate"] == "5/min, x2 each 10 devices success, at most 40/min (now 10/min; 7 notified of 8 allowed)");
  CHECK(summary["start_at"] == "2026-12-01T00:00:00Z");
  CHECK(summary["windows"] == "Mon-Fri 01:00-04:00 (Europe/Berlin)");
  CHECK(summary["next_window_at"] == "2026-12-08T00:00:00Z");
  CHECK(summary["waiting_window"] == 3);
  CHECK(summary["retry"] == "2 retries of transient failures, after 30s doubling to at most 1h");
  CHECK(summary["failures"] == "3 (1 forgiven by a resume)");
  CHECK(summary["status"] == "failed 3, installed 1");  // zero counts left out
  CHECK(summary["previous"] == "dep-6");
  CHECK(summary["attention"] == "wave 1 halted");
  CHECK(summary["silent"] == "A1, B2, ...");  // more silent devices than named
  CHECK(summary["revert"] == "2 reverting, 1 cannot be reverted");
  REQUIRE(waves.size() == 2);
  CHECK(waves[0] == Json{{"wave", 1}, {"percent", "10%"}, {"state", "halted"}, {"admitted", 4}, {"installed", 1},
                         {"failed", 3}});
  CHECK(waves[1] == Json{{"wave", 2}, {"percent", "100%"}, {"state", "waiting"}, {"admitted", 0}});
}

TEST_CASE("deployment_views: a trust deployment says which trust version it carries, not images") {
  Json d = full_deployment();
  d["trust_version"] = 2;
  d["images"] = Json::array();
  auto summary = read_two(deployment_table_text(d, RenderOptions{OutputFormat::json})).first;
  CHECK(summary["carries"] == "trust update, version 2");
  CHECK_FALSE(summary.contains("images"));
  CHECK_FALSE(summary.contains("manifest"));
  CHECK(deployment_list_rows(Json::array({d}))[0]["carries"] == "trust 2");
}

TEST_CASE("deployment_views: unset controls are left out or say never") {
  Json d = full_deployment();
  for (const char* key : {"halt_reason", "next_wave_at", "previous"}) d[key] = nullptr;
  d["halt_on_failure"] = nullptr;
  d["step_after"] = 0;
  d["failures_forgiven"] = 0;
  d["device_status"] = {{"pending", 0}};
  d["wave_error"] = {{"percent", 33.3}};
  d["rate"] = {{"base_per_minute", 5}, {"factor", 1.0}, {"every", 10}, {"increase_on", "success"},
               {"max_per_minute", nullptr}};
  d["window_open"] = true;
  d["manifest"] = "m-1";
  for (const char* key : {"wave_success", "abort_criteria", "timeouts", "retry", "rate_now", "attention",
                          "silent_devices", "revert"})
    d.erase(key);
  auto parts = read_two(deployment_table_text(d, RenderOptions{OutputFormat::json}));
  auto& summary = parts.first;
  CHECK(parts.second.size() == 2);
  CHECK(summary["halt_on_failure"] == "never");
  CHECK(summary["manifest"] == "m-1");
  CHECK(summary["wave_error"] == "halt above 33.3% of a wave failed");
  CHECK(summary["rate"] == "5/min");
  CHECK(summary["next_window_at"] == "open now");
  CHECK(summary["failures"] == 3);
  CHECK(summary["status"] == "-");
  for (const char* key : {"reason", "step_after", "previous", "wave_success", "abort_criteria", "timeouts", "retry",
                          "attention", "silent", "revert"}) {
    const std::string name = key;
    CAPTURE(name);
    CHECK_FALSE(summary.contains(name));
  }
}

TEST_CASE("deployment_views: the dry-run plan lists waves and each check's result") {
  Json plan = refused_plan();
  auto parts = read_two(dry_run_text(plan, RenderOptions{OutputFormat::json}));
  auto& summary = parts.first;
  auto& checks = parts.second;
  CHECK(summary["would_create"] == "no");
  CHECK(summary["devices"] == 12);
  CHECK(summary["waves"] == "wave 1 (25%): 3 devices, wave 2 (100%): 1 devices");
  CHECK(summary["halt_on_failure"] == "10% (once 3 devices finished)");
  CHECK(summary["timeouts"] == "install 2h (then timed_out, a failure)");
  CHECK_FALSE(summary.contains("rate"));
  REQUIRE(checks.size() == 2);
  CHECK(checks[0]["result"] == "passed");
  CHECK(checks[1] == Json{{"check", "sequence"}, {"result", "FAILED"}, {"detail", "12 is not above 12"}});
  // As a table both parts are there, the failed check in capitals.
  auto table = dry_run_text(plan, RenderOptions{OutputFormat::table});
  CHECK(table.find("FAILED") != std::string::npos);
  CHECK(table.find("12 is not above 12") != std::string::npos);
}

TEST_CASE("deployment_views: the list has one row per deployment") {
  auto rows = deployment_list_rows(Json::array({full_deployment()}));
  REQUIRE(rows.size() == 1);
  CHECK(rows[0] == Json{{"id", "dep-7"},       {"group", "thermo/eu"}, {"carries", "release"}, {"state", "halted"},
                        {"wave", "1/2"},       {"rollout", "10%"},     {"admitted", 4},
                        {"installed", 1},      {"failures", 3},        {"created_at", "2026-12-01T00:00:00Z"}});
  CHECK(deployment_list_rows(Json::array()).empty());
}

TEST_CASE("deployment_views: watch writes one JSON object per line with -o json, else each table in turn") {
  auto capture = [](const std::string& format, auto&& body) { return test::capture_output(format, body).out; };
  Json d = full_deployment();
  auto json = capture("json", [&](const Context& ctx) {
    DeploymentWatchView view(ctx);
    view.show(d);
    d["state"] = "aborted";
    view.show(d);
  });
  std::istringstream lines(json);
  std::string first, second, rest;
  REQUIRE(std::getline(lines, first));
  REQUIRE(std::getline(lines, second));
  CHECK_FALSE(std::getline(lines, rest));
  CHECK(Json::parse(first)["state"] == "halted");
  CHECK(Json::parse(second)["state"] == "aborted");

  auto table = capture("table", [&](const Context& ctx) {
    DeploymentWatchView view(ctx);
    view.show(d);
    view.show(d);
  });
  CHECK(table.find("\x1b[") == std::string::npos);  // not a terminal: no cursor movement
  auto one = deployment_table_text(d, RenderOptions{OutputFormat::table});
  CHECK(table == one + "\n" + one + "\n");
}

TEST_CASE("deployment_views: -o jsonl watches events, one line each; the plan and the list follow the format") {
  auto lines = test::capture_output("jsonl", [&](const Context& ctx) {
    DeploymentWatchView view(ctx);
    CHECK(view.events());
    auto sink = view.sink();
    sink(Json{{"event", "watching"}, {"state", "active"}});
    sink(Json{{"event", "completed"}});
  });
  CHECK(lines.out == "{\"event\":\"watching\",\"state\":\"active\"}\n{\"event\":\"completed\"}\n");
  test::capture_output("json", [&](const Context& ctx) { CHECK_FALSE(DeploymentWatchView(ctx).events()); });

  Json plan = refused_plan();
  auto as_json = test::capture_output("json", [&](const Context& ctx) { render_deployment_plan(ctx, plan); });
  CHECK(Json::parse(as_json.out) == plan);
  auto as_table = test::capture_output("table", [&](const Context& ctx) { render_deployment_plan(ctx, plan); });
  CHECK(as_table.out == dry_run_text(plan, RenderOptions{OutputFormat::table}));

  Json all = Json::array({full_deployment()});
  auto list_json = test::capture_output("json", [&](const Context& ctx) { render_deployment_list(ctx, all); });
  CHECK(Json::parse(list_json.out) == all);
  auto list_table = test::capture_output("csv", [&](const Context& ctx) { render_deployment_list(ctx, all); });
  CHECK(list_table.out.find("carries") == std::string::npos);  // csv is not the table: the service's fields
  CHECK(list_table.out.find(all[0]["id"].get<std::string>()) != std::string::npos);
  auto table = test::capture_output("table", [&](const Context& ctx) { render_deployment_list(ctx, all); });
  CHECK(table.out.find("release") != std::string::npos);  // the table's "carries" column
}
