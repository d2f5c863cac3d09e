// Tests for service/devices.cpp in-process (both stores, as every service test): listing pages and filters at their
// edges, strict query parameters, counts by each key, time zones, assignment, claim, and the bundle import refusals.
#include <doctest/doctest.h>

#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "service/api.hpp"
#include "tests/service/service_fixture.hpp"
#include "tests/support/postgres.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_certificates.hpp"

using namespace kiln;
using namespace kiln::service;
using Json = nlohmann::json;

namespace {

// Products Thermo (with a group Field) and Lamp, and the station CA that signs the bundles the tests import.
struct Fixture : test::StationFixture {
  test::TestKey key;

  Fixture() {
    json("POST", "/v1/products", R"({"name":"Thermo"})");
    json("POST", "/v1/products", R"({"name":"Lamp"})");
    json("POST", "/v1/groups", R"({"product":"Thermo","name":"Field"})");
  }
  std::string unit(const std::string& uid, const Json& extra = Json::object()) const {
    return test::ProductTenant::unit(uid, key, extra);
  }
  Response import(const std::string& units) { return call("POST", "/v1/devices/import", bundle(units)); }
  std::vector<std::string> ids(const std::string& query) {
    std::vector<std::string> out;
    Json page = json("GET", "/v1/devices" + query);
    for (const auto& d : page["items"]) out.push_back(d["id"]);
    return out;
  }
};

}  // namespace

TEST_CASE("service devices: paging at its edges: exact fit, last id as cursor, past the end, limit bounds") {
  Fixture f;
  std::string units;
  for (int i = 0; i < 7; ++i) units += f.unit(fmt::format("d{}", i));
  REQUIRE(f.import(units).status == 200);

  auto exact = f.json("GET", "/v1/devices?limit=7");
  CHECK(exact["items"].size() == 7);
  CHECK(exact["next_cursor"].is_null());  // a page that holds everything has no next page

  auto first = f.json("GET", "/v1/devices?limit=3");
  CHECK(first["items"].size() == 3);
  CHECK(first["next_cursor"] == "d2");
  CHECK(f.ids("?limit=3&cursor=d2") == std::vector<std::string>{"d3", "d4", "d5"});
  CHECK(f.ids("?limit=3&cursor=d5") == std::vector<std::string>{"d6"});
  CHECK(f.json("GET", "/v1/devices?limit=3&cursor=d5")["next_cursor"].is_null());
  CHECK(f.ids("?cursor=d6").empty());
  CHECK(f.ids("?cursor=zzz").empty());
  CHECK(f.ids("?cursor=a").size() == 7);  // a cursor before every id: everything after it

  CHECK(f.ids("?limit=1") == std::vector<std::string>{"d0"});
  CHECK(f.call("GET", "/v1/devices?limit=10000").status == 200);
  for (const char* bad : {"0", "-1", "10001", "abc", "99999999999999999999"}) {
    CAPTURE(bad);
    auto r = f.call("GET", std::string("/v1/devices?limit=") + bad);
    CHECK(r.status == 400);
    CHECK(r.body.find("limit") != std::string::npos);
  }
}

// Found by this test: "limit=5abc" was read as 5 (std::stoll stops at the first non-digit), and the staged import's
// offset the same way; both are decimal digits only now, as the image upload offset already was.
TEST_CASE("service devices: limit and the staged import offset are decimal digits, not read leniently") {
  Fixture f;
  REQUIRE(f.import(f.unit("d0") + f.unit("d1")).status == 200);
  for (const char* bad : {"1abc", " 1", "+1", "1 ", "0x1", "1e1", "1.0"}) {
    CAPTURE(bad);
    auto r = f.call("GET", std::string("/v1/devices?limit=") + bad);
    CHECK(r.status == 400);
  }
  CHECK(f.ids("?limit=01").size() == 1);

  std::string part = f.unit("s0");
  for (const char* bad : {"0abc", "-0", " 0", "+0", "0x0", ""}) {
    CAPTURE(bad);
    auto r = f.call("POST", std::string("/v1/devices/import?import=staged&offset=") + bad, part);
    CHECK(r.status == 400);
    CHECK(r.body.find("offset") != std::string::npos);
  }
  auto missing = f.call("POST", "/v1/devices/import?import=staged", part);
  CHECK(missing.status == 400);
  CHECK(missing.body.find("offset") != std::string::npos);
  // Nothing of the refused parts was staged: the import still starts at 0.
  CHECK(f.call("POST", "/v1/devices/import?import=staged&offset=0", part).status == 202);
}

// A staged import is applied one part per transaction (so that check-ins get the store between parts); every
// unit is checked first, so a refusal anywhere in it still leaves nothing imported.
TEST_CASE("service devices: a staged import is checked whole before its parts are applied, one at a time") {
  Fixture f;
  test::TestKey other;
  REQUIRE(f.import(test::ProductTenant::unit("k-5", other)).status == 200);
  // Sends a bundle's `text` in parts of two lines each (the last one with the trailer).
  auto staged_text = [&](const std::string& id, const std::string& text) {
    std::vector<std::string> lines;
    for (std::size_t at = 0; at < text.size();) {
      auto end = text.find('\n', at) + 1;
      lines.push_back(text.substr(at, end - at));
      at = end;
    }
    std::size_t offset = 0;
    Response last;
    for (std::size_t i = 0; i < lines.size(); i += 2) {
      std::string part = lines[i] + (i + 1 < lines.size() ? lines[i + 1] : "");
      last = f.call("POST", fmt::format("/v1/devices/import?import={}&offset={}", id, offset), part);
      offset += part.size();
      if (i + 2 < lines.size()) REQUIRE(last.status == 202);
    }
    return last;
  };
  auto staged = [&](const std::string& id, const std::string& units) { return staged_text(id, f.bundle(units)); };
  std::string good;
  for (int i = 1; i <= 4; ++i) good += f.unit(fmt::format("k-{}", i));
  // k-5 is registered with another key: refused, in the last part or the first.
  auto late = staged("late", good + f.unit("k-5"));
  CHECK(late.status == 409);
  CHECK(late.body.find("k-5") != std::string::npos);
  auto early = staged("early", f.unit("k-5") + good);
  CHECK(early.status == 409);
  CHECK(f.ids("?limit=100") == std::vector<std::string>{"k-5"});
  // What a unit would be refused for is only said of a bundle whose signature holds: an edited one says so.
  auto edited = f.bundle(f.unit("k-5") + good);
  edited.replace(edited.find("k-1"), 3, "k-9");
  auto tampered = staged_text("tampered", edited);
  CHECK(tampered.status == 422);
  CHECK(tampered.body.find("bundle_modified") != std::string::npos);
  // A malformed unit in a later part: nothing imported either.
  auto malformed = staged("malformed", good + f.unit("k-6", {{"last_seen", "yesterday"}}));
  CHECK(malformed.status == 400);
  CHECK(f.ids("?limit=100") == std::vector<std::string>{"k-5"});

  auto done = staged("done", good + f.unit("k-6") + f.unit("k-7"));
  REQUIRE(done.status == 200);
  CHECK(Json::parse(done.body)["imported"] == 6);
  CHECK(f.ids("?limit=100").size() == 7);
  // Applying it again changes nothing.
  auto again = staged("again", good + f.unit("k-6") + f.unit("k-7"));
  CHECK(again.status == 200);
  CHECK(f.ids("?limit=100").size() == 7);
}

TEST_CASE("service devices: filters by product, group, state, version and claimed, alone and combined") {
  Fixture f;
  std::string units = f.unit("t0", {{"version", "1.0.0"}, {"state", "secured"}}) +
                      f.unit("t1", {{"version", "2.0.0"}, {"state", "secured"}, {"group", "Field"}}) +
                      f.unit("t2", {{"version", "2.0.0"}}) + f.unit("l0", {{"product", "Lamp"}, {"version", "2.0.0"}});
  REQUIRE(f.import(units).status == 200);
  CHECK(f.ids("?product=Thermo") == std::vector<std::string>{"t0", "t1", "t2"});
  CHECK(f.ids("?product=Lamp") == std::vector<std::string>{"l0"});
  CHECK(f.ids("?group=Thermo%2FField") == std::vector<std::string>{"t1"});
  CHECK(f.ids("?state=provisioned") == std::vector<std::string>{"l0", "t2"});  // the default state of an import
  CHECK(f.ids("?version=2.0.0&state=secured") == std::vector<std::string>{"t1"});
  CHECK(f.ids("?version=2.0.0&product=Thermo&limit=1") == std::vector<std::string>{"t1"});
  CHECK(f.ids("?version=9.9.9").empty());
  CHECK(f.ids("?claimed=false").size() == 4);
  CHECK(f.ids("?claimed=true").empty());
  for (const char* bad : {"yes", "1", "TRUE"}) {
    CAPTURE(bad);
    auto r = f.call("GET", std::string("/v1/devices?claimed=") + bad);
    CHECK(r.status == 400);
    CHECK(r.body.find("claimed") != std::string::npos);
  }
  CHECK(f.call("GET", "/v1/devices?product=Nope").status == 404);
  CHECK(f.call("GET", "/v1/devices?group=Lamp%2FField").status == 404);  // Field is Thermo's group

  // Every device listed shows the same fields.
  auto item = f.json("GET", "/v1/devices?limit=1&product=Lamp")["items"][0];
  std::set<std::string> keys;
  for (auto it = item.begin(); it != item.end(); ++it) keys.insert(it.key());
  CHECK(keys == std::set<std::string>{"id", "product", "group", "state", "version", "claimed", "last_seen",
                                      "imported_at", "time_zone", "trust_version", "revoked_at", "revoked_reason"});
  CHECK(item["group"] == "Lamp/Development");
  CHECK(item["claimed"] == false);
  CHECK(item["last_seen"].is_null());
}

TEST_CASE("service devices: counts by version, state, group and product add up to the filtered total") {
  Fixture f;
  std::string units = f.unit("t0", {{"version", "1.0.0"}}) + f.unit("t1", {{"version", "1.0.0"}, {"group", "Field"}}) +
                      f.unit("t2") + f.unit("l0", {{"product", "Lamp"}, {"state", "secured"}});
  REQUIRE(f.import(units).status == 200);
  auto by_version = f.json("GET", "/v1/devices/count");  // version is the default
  CHECK(by_version["by"] == "version");
  CHECK(by_version["total"] == 4);
  bool saw_null = false;
  for (const auto& c : by_version["counts"]) saw_null = saw_null || (c["version"].is_null() && c["count"] == 2);
  CHECK(saw_null);  // devices without a version count under null
  auto by_state = f.json("GET", "/v1/devices/count?by=state");
  CHECK(by_state["total"] == 4);
  CHECK(by_state["counts"].size() == 2);
  auto by_product = f.json("GET", "/v1/devices/count?by=product&state=provisioned");
  CHECK(by_product["total"] == 3);
  REQUIRE(by_product["counts"].size() == 1);
  CHECK(by_product["counts"][0]["count"] == 3);
  auto by_group = f.json("GET", "/v1/devices/count?by=group&product=Thermo");
  CHECK(by_group["total"] == 3);
  CHECK(by_group["counts"].size() == 2);
  auto bad = f.call("GET", "/v1/devices/count?by=colour");
  CHECK(bad.status == 400);
  CHECK(bad.body.find("by must be") != std::string::npos);
  CHECK(f.call("GET", "/v1/devices/count?claimed=maybe").status == 400);
}

TEST_CASE("service devices: show, time zone and group assignment refuse what does not fit") {
  Fixture f;
  REQUIRE(f.import(f.unit("t0") + f.unit("l0", {{"product", "Lamp"}})).status == 200);
  CHECK(f.call("GET", "/v1/devices/nope").status == 404);

  CHECK(f.json("PATCH", "/v1/devices/t0", R"({"time_zone":"Europe/Berlin"})")["time_zone"] == "Europe/Berlin");
  CHECK(f.json("GET", "/v1/devices/t0")["time_zone"] == "Europe/Berlin");
  CHECK(f.json("PATCH", "/v1/devices/t0", R"({"time_zone":null})")["time_zone"].is_null());
  for (const char* bad : {R"({"time_zone":"Mars/Olympus"})", R"({"time_zone":5})", R"({})", R"({"tz":"UTC"})",
                          R"({"time_zone":"UTC","x":1})", R"([])", "not json"}) {
    CAPTURE(bad);
    CHECK(f.call("PATCH", "/v1/devices/t0", bad).status == 400);
  }
  CHECK(f.call("PATCH", "/v1/devices/nope", R"({"time_zone":null})").status == 404);

  CHECK(f.json("POST", "/v1/devices/t0/assign", R"({"group":"Thermo/Field"})")["group"] == "Thermo/Field");
  auto other_product = f.call("POST", "/v1/devices/l0/assign", R"({"group":"Thermo/Field"})");
  CHECK(other_product.status == 409);
  CHECK(f.call("POST", "/v1/devices/t0/assign", R"({"group":"Thermo/Nope"})").status == 404);
  CHECK(f.call("POST", "/v1/devices/t0/assign", R"({})").status == 400);
  CHECK(f.call("POST", "/v1/devices/nope/assign", R"({"group":"Thermo/Field"})").status == 404);
  CHECK(f.json("GET", "/v1/devices/l0")["group"] == "Lamp/Development");
}

TEST_CASE("service devices: a claim needs a live nonce of this device and hex signature; each nonce works once") {
  Fixture f;
  REQUIRE(f.import(f.unit("t0") + f.unit("t1")).status == 200);
  auto challenge = f.json("POST", "/v1/devices/t0/claim-challenge");
  CHECK(challenge["device"] == "t0");
  CHECK(challenge["message"] == "kiln-claim-v1:t0:" + challenge["nonce"].get<std::string>());
  CHECK(challenge["expires_in"] == 300);

  auto not_hex =
      f.call("POST", "/v1/devices/t0/claim", Json{{"nonce", challenge["nonce"]}, {"signature", "xyz"}}.dump());
  CHECK(not_hex.status == 400);
  // Another device's nonce, or one never issued: 409, and the nonce of t0 is still live.
  CHECK(test::TenantApi::code(f.call("POST", "/v1/devices/t1/claim",
                          Json{{"nonce", challenge["nonce"]}, {"signature", "00"}}.dump())) == "challenge_unknown");
  CHECK(test::TenantApi::code(f.call("POST", "/v1/devices/t0/claim", Json{{"nonce", "feed"}, {"signature", "00"}}.dump())) ==
        "challenge_unknown");
  auto wrong = f.call("POST", "/v1/devices/t0/claim", Json{{"nonce", challenge["nonce"]}, {"signature", "00"}}.dump());
  CHECK(wrong.status == 422);
  CHECK(test::TenantApi::code(wrong) == "signature_invalid");
  // The nonce was spent by the failed attempt.
  CHECK(test::TenantApi::code(f.call("POST", "/v1/devices/t0/claim",
                          Json{{"nonce", challenge["nonce"]}, {"signature", "00"}}.dump())) == "challenge_unknown");
  CHECK(f.json("GET", "/v1/devices/t0")["claimed"] == false);
  CHECK(f.call("POST", "/v1/devices/nope/claim-challenge").status == 404);
}

TEST_CASE(
    "service devices: bundle imports refuse unsigned, truncated, malformed and trailing-line bundles, naming the "
    "line") {
  Fixture f;
  std::string good = f.unit("t0") + f.unit("t1");

  auto unsigned_bundle = f.call("POST", "/v1/devices/import", good);
  CHECK(unsigned_bundle.status == 422);
  CHECK(test::TenantApi::code(unsigned_bundle) == "bundle_unsigned");
  auto truncated = f.call("POST", "/v1/devices/import", good.substr(0, good.size() - 5));
  CHECK(test::TenantApi::code(truncated) == "bundle_truncated");
  auto malformed = f.call("POST", "/v1/devices/import", f.unit("t0") + "{not json\n");
  CHECK(malformed.status == 400);
  CHECK(malformed.body.find("line 2") != std::string::npos);
  auto after = f.call("POST", "/v1/devices/import", f.bundle(good) + f.unit("t9"));
  CHECK(test::TenantApi::code(after) == "bundle_modified");

  struct Bad {
    std::string units;
    std::string says;
  };
  const std::vector<Bad> bad = {
      {f.unit("t0") + "[1,2]\n", "line 2 is not an object"},
      {f.unit("bad uid!"), "uid may only hold"},
      {Json{{"uid", "t5"}, {"product", "Thermo"}}.dump() + "\n", "needs 'certificate' or 'public_key'"},
      {f.unit("t5", {{"public_key", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}}),
       "public_key is not a PEM public key"},
      {f.unit("t5", {{"certificate", "not a certificate"}}), "certificate is not a PEM X.509 certificate"},
      {f.unit("t5", {{"group", "Nope"}}), "group Nope not found"},
      {f.unit("t5", {{"encryption_key", "junk"}}), "encryption_key is not a PEM public key"},
  };
  for (const Bad& b : bad) {
    CAPTURE(b.says);
    auto r = f.import(b.units);
    CHECK(r.status >= 400);
    CHECK_MESSAGE(r.body.find(b.says) != std::string::npos, r.body);
  }
  // Nothing of a refused bundle was imported, not even its good lines.
  CHECK(f.ids("").empty());
  CHECK(f.import(good).status == 200);
  CHECK(f.ids("") == std::vector<std::string>{"t0", "t1"});
}
