// Tests for provisioning/station_run against in-process emulated boards: the operator recorded, no boards
// refused before the profile is read, a run sealed by a checkpoint (a dry run writes nothing), a watch that
// says how to stop it and provisions with the run's options.
#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "provisioning/station_run.hpp"
#include "tests/provisioning/station_fixture.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/scoped_env.hpp"

using namespace kiln;

namespace {

// What the ledger holds after a run, verified with the station key.
LedgerVerifyReport ledger_report(const test::StationFiles& files) {
  Ledger ledger(files.profile.ledger);
  return ledger.verify(load_public_key(files.profile.station_key));
}

// Two emulated boards and a station whose profile names their vendor root: a run of `jobs` workers over them.
struct TwoBoards {
  test::ServedBoards served{2};
  test::StationFiles files{served.root.cert_path};
  StationRun run(int jobs) const {
    StationRun r;
    r.profile = files.profile_path.string();
    r.operator_name = "tester";
    r.jobs = jobs;
    return r;
  }
};

}  // namespace

TEST_CASE("station run: the operator named, else $USER, else unknown") {
  CHECK(station_operator("alice") == "alice");
  {
    test::ScopedEnv user("USER", "bob");
    CHECK(station_operator("") == "bob");
  }
  {
    test::ScopedEnv user("USER", "");
    CHECK(station_operator("") == "unknown");
  }
  test::ScopedEnv user("USER", nullptr);
  CHECK(station_operator("") == "unknown");
}

TEST_CASE("station run: the run's flags become the per-board options") {
  StationRun run;
  run.dry_run = true;
  run.reprovision = true;
  run.timeout_ms = 1234;
  auto options = provision_options(run);
  CHECK(options.dry_run);
  CHECK(options.reprovision);
  CHECK(options.board_timeout == std::chrono::milliseconds(1234));
  CHECK_FALSE(provision_options(StationRun{}).dry_run);
}

TEST_CASE("station run: no boards is a board error before the profile is read") {
  StationRun run;
  run.profile = "/nonexistent/station.toml";
  CHECK(test::exit_code_of([&] { run_station(run, {}, {}, {}); }) == ExitCode::board);
}

TEST_CASE("station run: the boards are provisioned and the run sealed; a dry run writes nothing") {
  TwoBoards two;
  const auto& served = two.served;
  const auto& files = two.files;
  auto run = two.run(2);

  run.dry_run = true;
  auto planned = run_station(run, served.addresses(), {}, {});
  REQUIRE(planned.size() == 2);
  for (const auto& o : planned) CHECK(o.result == BoardStatus::dry_run);
  CHECK(ledger_report(files).units == 0);
  CHECK(ledger_report(files).checkpoints == 0);  // not sealed: nothing happened
  const auto rows_before = ledger_report(files).rows;

  run.dry_run = false;
  std::vector<std::string> steps;
  auto outcomes = run_station(run, served.addresses(), {}, [&](const ProvisionEvent& e) { steps.push_back(e.step); });
  REQUIRE(outcomes.size() == 2);
  for (const auto& o : outcomes) CHECK(o.result == BoardStatus::provisioned);
  CHECK_FALSE(steps.empty());
  auto report = ledger_report(files);
  CHECK(report.ok);
  CHECK(report.units == 2);
  CHECK(report.rows > rows_before);
  CHECK(report.unsealed_rows == 0);  // checkpoint_every is 4: only the run's own checkpoint seals two units
  CHECK(report.checkpoints >= 1);
}

TEST_CASE("station run: a watch says how to stop it, then provisions each board that appears") {
  TwoBoards two;
  const auto& served = two.served;
  const auto& files = two.files;
  auto run = two.run(1);
  DiscoveryOptions discovery;
  discovery.emu_dir = served.dir.path();
  discovery.usb_ids = {{0x1234, 0x5678}};
  auto where = watch_where(discovery, 2);
  CHECK(where.usb_ids == discovery.usb_ids);
  CHECK(where.max_boards == std::optional<std::size_t>(2));
  where.usb = false;  // no USB in the test: the emulator directory only
  std::vector<std::string> notices;
  auto outcomes = watch_station(run, where, {}, {}, [&](const std::string& n) { notices.push_back(n); });
  REQUIRE(outcomes.size() == 2);
  for (const auto& o : outcomes) CHECK(o.result == BoardStatus::provisioned);
  REQUIRE(notices.size() == 2);
  CHECK(notices[0] == "Ctrl-C stops the watch (boards in flight are finished)");
  CHECK(notices[1].starts_with("watching for boards: "));
  auto report = ledger_report(files);
  CHECK(report.units == 2);
  CHECK(report.unsealed_rows == 0);
}
