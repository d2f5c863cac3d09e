// Tests for transport/device_claims: key templates, UIDs from arguments and files (none named is a usage error),
// the unclaimed-devices error, devices moved to a group on a real kiln-service, and `--time-zone` values.
#include <doctest/doctest.h>

#include <fstream>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>

#include "core/error.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/service_setup.hpp"
#include "tests/support/temp_dir.hpp"
#include "transport/device_claims.hpp"

using namespace kiln;
using namespace kiln::transport;

TEST_CASE("device claims: {uid} in a key template names each device's key") {
  CHECK(device_keyref("keys/{uid}.pem", "A1B2") == "keys/A1B2.pem");
  CHECK(device_keyref("{uid}/{uid}.pem", "X") == "X/X.pem");
  CHECK(device_keyref("pkcs11:object={uid}", "{uid}") == "pkcs11:object={uid}");  // no endless replacement
  CHECK(device_keyref("key.pem", "A1") == "key.pem");
}

TEST_CASE("device claims: UIDs from the arguments, then the file's, each once and in order") {
  test::TempDir dir;
  std::ofstream(dir.file("ids.txt")) << "# line 1\nB\n{\"uid\":\"C\"}\nA\n\n";
  CHECK(merge_device_ids({"A"}, dir.file("ids.txt")) == std::vector<std::string>{"A", "B", "C"});
  CHECK(merge_device_ids({"A", "B"}, "") == std::vector<std::string>{"A", "B"});
  CHECK(test::exit_code_of([&] { merge_device_ids({}, dir.file("missing.txt")); }) == ExitCode::not_found);
  // "-" reads standard input (device list -o jsonl | kiln device assign --from-file -).
  std::istringstream piped("{\"uid\":\"D\"}\nA\n");
  auto* saved = std::cin.rdbuf(piped.rdbuf());
  auto from_stdin = merge_device_ids({"A"}, "-");
  std::cin.rdbuf(saved);
  CHECK(from_stdin == std::vector<std::string>{"A", "D"});
}

TEST_CASE("device claims: every unclaimed device is named, with its error") {
  Json all_ok = Json::array({{{"uid", "A"}, {"result", "claimed"}, {"error", ""}}});
  CHECK(test::exit_code_of([&] { require_all_claimed(all_ok); }) == ExitCode::ok);
  Json rows = all_ok;
  rows.push_back({{"uid", "B"}, {"result", "failed"}, {"error", "bad signature"}});
  rows.push_back({{"uid", "C"}, {"result", "failed"}, {"error", "not found"}});
  try {
    require_all_claimed(rows);
    FAIL("accepted");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::partial);
    CHECK(std::string(e.what()) == "2 of 3 devices were not claimed: B (bad signature); C (not found)");
  }
}

TEST_CASE("device claims: no device named is a usage error saying how to name them") {
  CHECK(named_device_ids({"A", "B"}, "") == std::vector<std::string>{"A", "B"});
  try {
    named_device_ids({}, "", "name them with --id UID");
    FAIL("accepted");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::usage);
    CHECK(std::string(e.what()) == "which devices?");
    CHECK(e.hint() == "name them with --id UID");
  }
  test::TempDir dir;
  std::ofstream(dir.file("empty.txt")) << "# nothing\n";
  CHECK(test::exit_code_of([&] { named_device_ids({}, dir.file("empty.txt")); }) == ExitCode::usage);
}

TEST_CASE("device claims: a device's time zone is an IANA zone or none, else a usage error naming --time-zone") {
  CHECK(device_time_zone("Europe/Berlin") == std::optional<std::string>("Europe/Berlin"));
  CHECK(device_time_zone("UTC") == std::optional<std::string>("UTC"));
  CHECK(device_time_zone("none") == std::nullopt);
  try {
    device_time_zone("Mars/Olympus");
    FAIL("accepted");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::usage);
    CHECK(std::string(e.what()) ==
          "--time-zone wants an IANA time zone such as Europe/Berlin or UTC (or none), not 'Mars/Olympus'");
  }
}

// The service with the product Thermo, its group Lab and `count` devices dev-1 .. dev-`count` (one key), and a
// client logged in as its admin.
struct AssignSetup {
  test::ServiceSetup s;
  std::optional<ServiceApi> api;
  explicit AssignSetup(int count) {
    s.json({"product", "create", "Thermo"});
    s.json({"group", "create", "Thermo/Lab"});
    test::TestKey key;
    std::string units;
    for (int i = 1; i <= count; ++i)
      units += Json{{"uid", "dev-" + std::to_string(i)}, {"product", "Thermo"}, {"state", "secured"},
                    {"public_key", key.public_pem()}}
                   .dump() +
               "\n";
    s.json({"device", "import", s.write_bundle("units.jsonl", units)});
    Credentials credentials;
    credentials.service = s.service->url();
    credentials.token = test::ServiceSetup::token_of(s.admin_token_file);
    credentials.ca_file = (s.data / "ca.pem").string();
    api.emplace(credentials);
  }
  // The requests made to the batch route so far: the distinct request IDs of its audit entries (one per device
  // moved, or one for a refused batch), read page by page.
  std::size_t batch_requests() {
    std::set<std::string> requests;
    std::string cursor;
    do {
      auto audit = api->get("/v1/audit?action=device.assign&limit=1000" + (cursor.empty() ? "" : "&cursor=" + cursor));
      for (const auto& entry : audit["items"])
        if (entry["route"] == "/v1/devices/assign") requests.insert(entry["request_id"].get<std::string>());
      cursor = audit.value("next_cursor", Json()).is_string() ? audit["next_cursor"].get<std::string>() : "";
    } while (!cursor.empty());
    return requests.size();
  }
};

TEST_CASE("device claims: devices are moved to a group in order, a batch per request; a refused batch moves none") {
  AssignSetup a(3);
  auto& api = *a.api;
  auto moved = assign_devices(api, {"dev-2", "dev-1"}, "Thermo/Lab");
  REQUIRE(moved.size() == 2);
  CHECK(moved[0]["id"] == "dev-2");
  CHECK(moved[1]["id"] == "dev-1");
  CHECK(moved[0]["group"] == "Thermo/Lab");
  CHECK(moved[1]["group"] == "Thermo/Lab");
  CHECK(moved[0] == show_device(api, "dev-2"));  // each as device show gives it, as before batches
  CHECK(a.batch_requests() == 1);
  CHECK(assign_devices(api, {}, "Thermo/Lab").empty());
  CHECK(a.batch_requests() == 1);  // none named, no request

  a.s.json({"group", "create", "Thermo/Spare"});
  // Batches of 2: the first (dev-1, dev-3) moves, the second is refused whole (dev-2 stays), naming the device.
  std::vector<std::uint64_t> reports;
  try {
    assign_devices(api, {"dev-1", "dev-3", "no-such-device", "dev-2"}, "Thermo/Spare",
                   [&](std::uint64_t done) { reports.push_back(done); }, 2);
    FAIL("accepted");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::partial);  // the first batch moved: partial work (docs/exit-codes.md)
    CHECK(std::string(e.what()).find("device no-such-device not found") != std::string::npos);
    CHECK(std::string(e.what()).starts_with("2 devices were moved, then a batch of 2 was refused: "));
    CHECK(e.hint().find("fix that device") != std::string::npos);
  }
  CHECK(reports == std::vector<std::uint64_t>{2});
  CHECK(show_device(api, "dev-1")["group"] == "Thermo/Spare");
  CHECK(show_device(api, "dev-3")["group"] == "Thermo/Spare");
  CHECK(show_device(api, "dev-2")["group"] == "Thermo/Lab");
  // A refused first batch moves nothing.
  CHECK(test::exit_code_of([&] { assign_devices(api, {"dev-2", "no-such-device"}, "Thermo/Spare"); }) ==
        ExitCode::not_found);
  CHECK(show_device(api, "dev-2")["group"] == "Thermo/Lab");
}

TEST_CASE("device claims: 2,500 devices are assigned in 3 requests of at most 1,000, all moved, in order") {
  AssignSetup a(2500);
  std::vector<std::string> ids;
  for (int i = 2500; i >= 1; --i) ids.push_back("dev-" + std::to_string(i));
  std::vector<std::uint64_t> reports;
  auto moved = assign_devices(*a.api, ids, "Thermo/Lab", [&](std::uint64_t done) { reports.push_back(done); });
  CHECK(a.batch_requests() == 3);
  CHECK(reports == std::vector<std::uint64_t>{1000, 2000, 2500});
  REQUIRE(moved.size() == 2500);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    CHECK(moved[i]["id"] == ids[i]);
    CHECK(moved[i]["group"] == "Thermo/Lab");
  }
  auto counts = count_devices(*a.api, "group", DeviceFilter{});
  REQUIRE(counts["counts"].size() == 1);
  CHECK(counts["counts"][0]["group"] == "Thermo/Lab");
  CHECK(counts["counts"][0]["count"] == 2500);
}

TEST_CASE("device claims: claim results round-trip through their names; another result is no claim") {
  for (auto result : {ClaimResult::claimed, ClaimResult::failed})
    CHECK(parse_claim_result(claim_result_name(result)) == result);
  CHECK(claim_result_name(ClaimResult::claimed) == "claimed");
  CHECK(claim_result_name(ClaimResult::failed) == "failed");
  CHECK_FALSE(parse_claim_result("Claimed").has_value());
  CHECK_FALSE(parse_claim_result("").has_value());
  // A row whose result this kiln does not know counts as not claimed, named with that result.
  Json rows = Json::array({{{"uid", "A"}, {"result", "claimed"}, {"error", nullptr}},
                           {{"uid", "B"}, {"result", "queued"}, {"error", nullptr}}});
  try {
    require_all_claimed(rows);
    FAIL("accepted");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::partial);
    CHECK(std::string(e.what()) == "1 of 2 devices were not claimed: B (result 'queued')");
  }
}
