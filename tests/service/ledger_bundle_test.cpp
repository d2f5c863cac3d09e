// Tests for service/ledger_bundle: the trailer's fields parsed or refused (400 naming the field), and through the
// import endpoint in-process (both stores): unit count and content checks, signer trust, the ledger head's and
// chain's signatures, and a ledger that may only grow from the head last imported.
#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "service/api.hpp"
#include "service/ledger_bundle.hpp"
#include "signing/ledger_signature.hpp"
#include "tests/service/service_fixture.hpp"
#include "tests/support/test_certificates.hpp"

using namespace kiln;
using namespace kiln::service;
using OJson = nlohmann::ordered_json;

namespace {

std::string sha256_hex(const std::string& text) { return to_hex(digest(HashAlg::sha256, as_bytes(text))); }

// A station's ledger: row hashes, and its heads signed as kiln's station signs them (ECDSA over SHA-256).
struct Ledger {
  std::string id = "0a1b2c3d";
  std::vector<std::string> rows;
  void grow(std::size_t count) {
    while (rows.size() < count) rows.push_back(sha256_hex(id + " row " + std::to_string(rows.size() + 1)));
  }
  OJson head(const test::TestKey& station, std::size_t count) {
    grow(count);
    std::vector<std::string> chain(rows.begin(), rows.begin() + static_cast<std::ptrdiff_t>(count));
    return OJson{{"ledger_id", id},
                 {"rows", count},
                 {"hash", chain.back()},
                 {"signature", test::sign_message_hex(station, ledger_head_message(id, static_cast<std::int64_t>(count),
                                                                                   chain.back()))},
                 {"chain", chain},
                 {"chain_signature", test::sign_message_hex(station, ledger_chain_message(id, chain))}};
  }
};

// `units` with a signed trailer carrying `head` (none when null); `edit` changes the trailer before it is written.
std::string bundle(const std::string& units, const test::TestKey& station, const OJson& head = nullptr,
                   const std::function<void(OJson&)>& edit = {}) {
  auto signed_text = test::signed_bundle(units, station);
  auto trailer_at = signed_text.rfind('\n', signed_text.size() - 2) + 1;
  if (units.empty()) trailer_at = 0;
  auto trailer = OJson::parse(signed_text.substr(trailer_at));
  if (!head.is_null()) trailer["ledger_head"] = head;
  if (edit) edit(trailer);
  return signed_text.substr(0, trailer_at) + trailer.dump() + "\n";
}

struct Fixture : test::ServiceFixture {
  test::TestCa station{"Ledger Station CA"};
  test::TestKey device_key;
  Ledger ledger;
  Fixture() {
    add_ca(station, true);
    json("POST", "/v1/products", R"({"name":"Thermo"})");
  }
  std::string unit(const std::string& uid) const { return test::ProductTenant::unit(uid, device_key); }
  service::Response import(const std::string& text) { return call("POST", "/v1/devices/import", text); }
};

std::string refusal(const OJson& trailer) {
  try {
    parse_bundle_trailer(OJson::parse(trailer.dump()));
  } catch (const ApiError& e) {
    CHECK(e.status == 400);
    return e.message;
  }
  return "";
}

}  // namespace

TEST_CASE("ledger_bundle: a trailer's fields are read, and each malformed one is refused by name") {
  test::TestKey station;
  Ledger ledger;
  auto text = bundle("", station, ledger.head(station, 2));
  auto line = OJson::parse(text);
  CHECK(is_bundle_trailer(line));
  CHECK_FALSE(is_bundle_trailer(OJson{{"uid", "dev-1"}}));
  auto t = parse_bundle_trailer(line);
  CHECK(t.units == 0);
  CHECK(t.algorithm == "ecdsa-p256-sha256");
  CHECK(t.bundle_sha256 == digest(HashAlg::sha256, ByteView{}));
  REQUIRE(t.ledger_head);
  CHECK(t.ledger_head->rows == 2);
  CHECK(t.ledger_head->chain == ledger.rows);
  CHECK(t.ledger_head->hash == ledger.rows[1]);
  CHECK(public_key_type(t.station_key) == KeyType::ecdsa_p256);

  auto with = [&](const std::function<void(OJson&)>& edit) {
    auto trailer = OJson::parse(text);
    edit(trailer);
    return refusal(trailer);
  };
  const std::string p = "bundle signature trailer: ";
  CHECK(with([](OJson& j) { j.erase("bundle_signature"); }) == p + "'bundle_signature' must be a hex string");
  CHECK(with([](OJson& j) { j["bundle_signature"] = "xyz1"; }) == p + "'bundle_signature' is not hex");
  CHECK(with([](OJson& j) { j["bundle_signature"] = ""; }) == p + "'bundle_signature' has a wrong length");
  CHECK(with([](OJson& j) { j["bundle_sha256"] = std::string(66, 'a'); }) == p + "'bundle_sha256' has a wrong length");
  CHECK(with([](OJson& j) { j["units"] = -1; }) == p + "'units' must be a count");
  CHECK(with([](OJson& j) { j.erase("station_public_key"); }) == p + "'station_public_key' (PEM) is required");
  CHECK(with([](OJson& j) { j["station_public_key"] = "hello"; }) == p + "'station_public_key' is not a PEM public key");
  CHECK(with([](OJson& j) { j["ledger_head"] = 1; }) == p + "'ledger_head' must be an object");
  CHECK(with([](OJson& j) { j["ledger_head"]["ledger_id"] = "0A1B"; }) ==
        p + "'ledger_head.ledger_id' must be 1 to 64 lowercase hex digits");
  CHECK(with([](OJson& j) { j["ledger_head"]["rows"] = 0; }) == p + "'ledger_head.rows' must be a positive count");
  CHECK(with([](OJson& j) { j["ledger_head"]["hash"] = "abc"; }) == p + "'ledger_head.hash' must be a hex SHA-256");
  CHECK(with([](OJson& j) { j["ledger_head"].erase("chain"); }) ==
        p + "'ledger_head.chain' (the hash of every ledger row) is required: export the bundle again with this kiln");
  CHECK(with([](OJson& j) { j["ledger_head"]["rows"] = 3; }) == p + "'ledger_head.chain' holds 2 hashes for 3 rows");
  CHECK(with([](OJson& j) { j["ledger_head"]["chain"][0] = 7; }) == p + "'ledger_head.chain' must hold hex SHA-256 hashes");
  CHECK(with([](OJson& j) { j["ledger_head"]["chain"][1] = std::string(64, '0'); }) ==
        p + "'ledger_head.chain' does not end with the head's hash");
  CHECK(with([](OJson& j) { j["ledger_head"].erase("chain_signature"); }) ==
        p + "'ledger_head.chain_signature' must be a hex string");
  CHECK(with([](OJson& j) { j["ledger_head"]["signature"] = "zz"; }) == p + "'ledger_head.signature' is not hex");
}

TEST_CASE("ledger_bundle: edited bundles and untrusted signers are refused before anything is imported") {
  Fixture f;
  auto units = f.unit("dev-1") + f.unit("dev-2");
  auto count = [&](int expected_units) {
    auto r = f.import(bundle(units, f.station.key, nullptr, [&](OJson& t) { t["units"] = expected_units; }));
    CHECK(r.status == 422);
    CHECK(test::TenantApi::code(r) == "bundle_modified");
    return test::TenantApi::message(r);
  };
  CHECK(count(3) == "the bundle holds 2 units but its signature trailer says 3: units were added or removed after the "
                    "station signed it");
  auto signed_text = bundle(units, f.station.key);
  auto edited = signed_text;
  edited.replace(edited.find("dev-2"), 5, "dev-9");
  auto r = f.import(edited);
  CHECK(r.status == 422);
  CHECK(test::TenantApi::message(r) ==
        "the bundle's content does not hash to the SHA-256 its station signed: it was edited after export");
  // Without the digest in the trailer, the signature is what catches the edit.
  r = f.import(bundle(units, f.station.key, nullptr, [&](OJson& t) {
    t.erase("bundle_sha256");
    t["bundle_signature"] = test::sign_message_hex(f.station.key, "other content");
  }));
  CHECK(r.status == 422);
  CHECK(test::TenantApi::code(r) == "bundle_signature_invalid");
  test::TestKey stranger;
  r = f.import(bundle(units, stranger));
  CHECK(r.status == 422);
  CHECK(test::TenantApi::code(r) == "bundle_signer_untrusted");
  CHECK(test::TenantApi::message(r).starts_with("the bundle is signed by station key sha256:"));
  CHECK(f.json("GET", "/v1/devices")["items"].empty());  // nothing was imported by any of them
  CHECK(f.import(signed_text).status < 300);
  CHECK(f.json("GET", "/v1/devices")["items"].size() == 2);
}

TEST_CASE("ledger_bundle: the ledger head must be signed and may only grow from the head last imported") {
  Fixture f;
  auto& key = f.station.key;
  // The head's and the chain's signatures are checked.
  auto forged_head = f.ledger.head(key, 2);
  forged_head["signature"] = test::sign_message_hex(key, "something else");
  auto r = f.import(bundle(f.unit("dev-1"), key, forged_head));
  CHECK(r.status == 422);
  CHECK(test::TenantApi::message(r).starts_with("the bundle's ledger head (ledger 0a1b2c3d, 2 rows) is not signed by"));
  auto forged_chain = f.ledger.head(key, 2);
  forged_chain["chain_signature"] = forged_chain["signature"];
  r = f.import(bundle(f.unit("dev-1"), key, forged_chain));
  CHECK(r.status == 422);
  CHECK(test::TenantApi::message(r).starts_with("the bundle's ledger chain (ledger 0a1b2c3d) is not signed by"));

  REQUIRE(f.import(bundle(f.unit("dev-1"), key, f.ledger.head(key, 2))).status < 300);
  CHECK(f.import(bundle(f.unit("dev-1"), key, f.ledger.head(key, 2))).status < 300);  // the same head again
  REQUIRE(f.import(bundle(f.unit("dev-2"), key, f.ledger.head(key, 4))).status < 300);

  r = f.import(bundle(f.unit("dev-3"), key, f.ledger.head(key, 3)));
  CHECK(r.status == 409);
  CHECK(test::TenantApi::code(r) == "ledger_rolled_back");
  CHECK(test::TenantApi::message(r).starts_with("ledger 0a1b2c3d has 3 rows in this bundle, but a bundle with 4 rows "
                                                "was imported from it at "));
  Ledger rewritten;  // the same ledger ID with other rows from row 1 on
  for (int i = 1; i <= 5; ++i) rewritten.rows.push_back(sha256_hex("rewritten row " + std::to_string(i)));
  r = f.import(bundle(f.unit("dev-3"), key, rewritten.head(key, 5)));
  CHECK(r.status == 409);
  CHECK(test::TenantApi::message(r).starts_with("ledger 0a1b2c3d: row 4 in this bundle is not the row 4 imported at "));
  r = f.import(bundle(f.unit("dev-3"), key));
  CHECK(r.status == 422);
  CHECK(test::TenantApi::code(r) == "ledger_head_missing");
  CHECK(test::TenantApi::message(r).find("(ledger 0a1b2c3d, 4 rows): its head was removed from the trailer") !=
        std::string::npos);
  CHECK(f.call("GET", "/v1/devices/dev-3").status == 404);
  // Another ledger of the same station starts its own history.
  Ledger other;
  other.id = "ff";
  CHECK(f.import(bundle(f.unit("dev-3"), key, other.head(key, 1))).status < 300);
  CHECK(f.import(bundle(f.unit("dev-4"), key, f.ledger.head(key, 6))).status < 300);
}
