// Tests for transport/device_claims: key templates, UIDs from arguments and files (none named is a usage error),
// the unclaimed-devices error, devices moved to a group on a real kiln-service, and `--time-zone` values.
#include <doctest/doctest.h>

#include <fstream>
#include <iostream>
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

TEST_CASE("device claims: devices are moved to a group in order; the first one refused stops the rest") {
  test::ServiceSetup s;
  s.json({"product", "create", "Thermo"});
  s.json({"group", "create", "Thermo/Lab"});
  test::TestKey one, two;
  std::string units;
  for (auto [uid, key] : {std::pair{"dev-1", &one}, std::pair{"dev-2", &two}})
    units += Json{{"uid", uid}, {"product", "Thermo"}, {"state", "secured"}, {"public_key", key->public_pem()}}.dump() + "\n";
  s.json({"device", "import", s.write_bundle("units.jsonl", units)});
  Credentials credentials;
  credentials.service = s.service->url();
  credentials.token = test::ServiceSetup::token_of(s.admin_token_file);
  credentials.ca_file = (s.data / "ca.pem").string();
  ServiceApi api(credentials);

  auto moved = assign_devices(api, {"dev-2", "dev-1"}, "Thermo/Lab");
  REQUIRE(moved.size() == 2);
  CHECK(moved[0]["id"] == "dev-2");
  CHECK(moved[1]["id"] == "dev-1");
  CHECK(moved[0]["group"] == moved[1]["group"]);
  CHECK_FALSE(moved[0]["group"].is_null());
  CHECK(assign_devices(api, {}, "Thermo/Lab").empty());
  s.json({"group", "create", "Thermo/Spare"});
  CHECK(test::exit_code_of([&] { assign_devices(api, {"dev-1", "no-such-device", "dev-2"}, "Thermo/Spare"); }) ==
        ExitCode::not_found);
  CHECK(show_device(api, "dev-1")["group"] != moved[0]["group"]);  // moved before the refusal
  CHECK(show_device(api, "dev-2")["group"] == moved[0]["group"]);  // not after it
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
