// Tests for transport/deployment_options: `kiln deployment create`'s text options turned into the API's
// request, bad text refused (exit 2) naming the option, and what ends a watch or an abort.
#include <doctest/doctest.h>

#include "core/error.hpp"
#include "tests/support/errors.hpp"
#include "transport/deployment_options.hpp"

using namespace kiln;
using namespace kiln::transport;

namespace {

DeploymentOptions base() {
  DeploymentOptions o;
  o.group = "Thermo/beta";
  o.images = {std::string(64, 'a')};
  return o;
}

std::string usage_message(const DeploymentOptions& o) {
  try {
    deployment_request(o);
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::usage);
    return e.what();
  }
  FAIL("accepted");
  return {};
}

}  // namespace

TEST_CASE("deployment options: waves, durations and percentages as the API takes them") {
  CHECK(parse_waves("1%,10%,50%,100%") == std::vector<int>{1, 10, 50, 100});
  CHECK(parse_waves("100") == std::vector<int>{100});
  CHECK(parse_duration_ms("30s", "--x") == 30000);
  CHECK(parse_duration_ms("5m", "--x") == 300000);
  CHECK(parse_duration_ms("500ms", "--x") == 500);
  CHECK(parse_duration_ms("2", "--x") == 2000);
  CHECK(duration_text(3600) == "1h");
  CHECK(duration_text(120) == "2m");
  CHECK(duration_text(90) == "90s");
  CHECK(percent_text(5) == "5%");
  CHECK(percent_text(2.5) == "2.5%");

  auto o = base();
  o.rollout = "10%,100%";
  o.step_after = "1h";
  o.halt_on_failure = "2.5%";
  o.halt_min_executed = "10";
  o.retry = "3";
  o.retry_backoff = "30s";
  o.retry_backoff_max = "10m";
  o.windows = {"Mon-Fri 01:00-04:00", "Sat,Sun 22:00-02:00"};
  o.window_tz = "Europe/Berlin";
  o.abort_on = {"refused:10:20"};
  o.timeouts = {"downloading=10m"};
  o.rate = "10/m";
  o.rate_factor = "2";
  o.rate_increase_on = "succeeded:5";
  auto r = deployment_request(o);
  CHECK(r.waves == std::vector<int>{10, 100});
  CHECK(r.step_after == 3600);
  CHECK(r.halt_on_failure == 2.5);
  CHECK(r.halt_min_executed == 10);
  CHECK_FALSE(r.halt_never);
  CHECK(r.controls["retry"] == Json{{"retries", 3}, {"backoff_seconds", 30}, {"backoff_max_seconds", 600}});
  CHECK(r.controls["schedule"]["windows"].size() == 2);
  CHECK(r.controls["schedule"]["time_zone"] == "Europe/Berlin");
  CHECK(r.controls["abort_criteria"][0]["kind"] == "refused");
  CHECK(r.controls["abort_criteria"][0]["min_executed"] == 20);
  CHECK(r.controls["timeouts"]["downloading"] == 600);
  CHECK(r.controls["rate"]["base_per_minute"] == 10);
  CHECK(r.controls["rate"]["every"] == 5);

  auto never = base();
  never.halt_on_failure = "never";
  CHECK(deployment_request(never).halt_never);
}

TEST_CASE("deployment options: bad text is a usage error naming the option") {
  struct Case {
    const char* option;
    std::function<void(DeploymentOptions&)> set;
  };
  const Case cases[] = {
      {"--rollout", [](DeploymentOptions& o) { o.rollout = "50%,10%"; }},
      {"--rollout", [](DeploymentOptions& o) { o.rollout = "101%"; }},
      {"--step-after", [](DeploymentOptions& o) { o.rollout = "10%,100%"; }},
      {"--halt-on-failure", [](DeploymentOptions& o) { o.halt_on_failure = "-1%"; }},
      {"--retry", [](DeploymentOptions& o) { o.retry = "11"; }},
      {"--retry", [](DeploymentOptions& o) { o.retry = "0"; }},
      {"--retry-backoff", [](DeploymentOptions& o) { o.retry = "2", o.retry_backoff = "0s"; }},
      {"--retry-backoff-max",
       [](DeploymentOptions& o) { o.retry = "2", o.retry_backoff = "10m", o.retry_backoff_max = "1m"; }},
      {"--retry", [](DeploymentOptions& o) { o.retry_backoff = "1m"; }},
      {"--window", [](DeploymentOptions& o) { o.windows = {"Funday 01:00-02:00"}; }},
      {"--window", [](DeploymentOptions& o) { o.windows = {"Mon 03:00-03:00"}; }},
      {"--window-tz", [](DeploymentOptions& o) { o.windows = {"Mon 01:00-02:00"}, o.window_tz = "Mars/Olympus"; }},
      {"--window", [](DeploymentOptions& o) { o.window_tz = "UTC"; }},
      {"--abort-on", [](DeploymentOptions& o) { o.abort_on = {"exploded:5"}; }},
      {"--timeout", [](DeploymentOptions& o) { o.timeouts = {"booting=1m"}; }},
      {"--rate", [](DeploymentOptions& o) { o.rate = "0"; }},
      {"--rate", [](DeploymentOptions& o) { o.rate_max = "5"; }},
      {"--start-at", [](DeploymentOptions& o) { o.start_at = "tomorrow"; }},
      // A deployment carries images or a trust update: one of them, and --manifest only with images.
      {"--trust-update", [](DeploymentOptions& o) { o.trust_update = "trust-1.cbor"; }},
      {"--trust-update", [](DeploymentOptions& o) { o.images.clear(); }},
      {"--manifest",
       [](DeploymentOptions& o) { o.images.clear(), o.trust_update = "trust-1.cbor", o.manifest = "ab"; }},
  };
  for (const auto& c : cases) {
    const std::string option = c.option;
    CAPTURE(option);
    auto o = base();
    c.set(o);
    CHECK(usage_message(o).find(option) != std::string::npos);
  }
}

TEST_CASE("deployment options: a watch ends by the deployment's state; an abort by what could not be reverted") {
  CHECK(test::exit_code_of([] { require_watch_completed({{"id", "d1"}, {"state", "completed"}}); }) == ExitCode::ok);
  CHECK(test::exit_code_of([] {
          require_watch_completed({{"id", "d1"}, {"state", "halted"}, {"halt_reason", "halted: 3 failed"}});
        }) == ExitCode::partial);
  CHECK(test::exit_code_of([] {
          require_watch_completed({{"id", "d1"}, {"state", "superseded"}, {"group", "Thermo/beta"}});
        }) == ExitCode::conflict);
  CHECK(test::exit_code_of([] { require_watch_completed({{"id", "d1"}, {"state", "aborted"}}); }) ==
        ExitCode::conflict);

  Json answer = {{"id", "d1"},
                 {"revert", {{"devices", Json::array({{{"device", "A"}, {"state", "reverting"}, {"reason", ""}}})}}}};
  CHECK(test::exit_code_of([&] { require_all_reverted(answer); }) == ExitCode::ok);
  answer["revert"]["devices"].push_back({{"device", "B"}, {"state", "unrevertable"}, {"reason", "no earlier manifest"}});
  try {
    require_all_reverted(answer);
    FAIL("accepted");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::partial);
    CHECK(std::string(e.what()).find("B: no earlier manifest") != std::string::npos);
  }
  CHECK(test::exit_code_of([] { require_would_create({{"would_create", true}}); }) == ExitCode::ok);
  CHECK(test::exit_code_of([] { require_would_create({{"would_create", false}, {"reason", "x"}}); }) ==
        ExitCode::verification_failed);
}

TEST_CASE("deployment options: a watch polls at least every 100ms, at the interval given") {
  CHECK(watch_interval_ms("2s") == 2000);
  CHECK(watch_interval_ms("100ms") == 100);
  CHECK(watch_interval_ms("1m") == 60000);
  CHECK(test::exit_code_of([] { watch_interval_ms("50ms"); }) == ExitCode::usage);
  CHECK_THROWS_WITH(watch_interval_ms("99ms"), "--interval is at least 100ms");
  CHECK(test::exit_code_of([] { watch_interval_ms("soon"); }) == ExitCode::usage);
  CHECK(watch_interval_ms("24h") == 24 * 3600 * 1000);
  CHECK_THROWS_WITH(watch_interval_ms("25h"), "--interval is at most 24h");
  CHECK_THROWS_WITH(watch_interval_ms("600h"), "--interval is at most 24h");
}

TEST_CASE("deployment options: a deployment or revert state this kiln does not know is an error, not another state") {
  CHECK(test::exit_code_of([] { require_watch_completed({{"id", "d1"}, {"state", "resumed"}}); }) == ExitCode::service);
  CHECK(test::exit_code_of([] { require_watch_completed({{"id", "d1"}}); }) == ExitCode::service);
  CHECK(test::exit_code_of([] { deployment_settled({{"id", "d1"}, {"state", "Completed"}}); }) == ExitCode::service);
  CHECK(deployment_settled({{"id", "d1"}, {"state", "halted"}}));
  CHECK_FALSE(deployment_settled({{"id", "d1"}, {"state", "paused"}}));
  Json answer = {{"id", "d1"},
                 {"revert", {{"devices", Json::array({{{"device", "A"}, {"state", "irreversible"}, {"reason", ""}}})}}}};
  CHECK(test::exit_code_of([&] { require_all_reverted(answer); }) == ExitCode::service);
}
