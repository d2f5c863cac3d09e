// Tests for transport/device_claims: key templates, UIDs from arguments and files, the unclaimed-devices error.
#include <doctest/doctest.h>

#include <fstream>
#include <iostream>
#include <sstream>

#include "core/error.hpp"
#include "tests/support/errors.hpp"
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
