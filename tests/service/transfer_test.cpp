// Ownership transfer and unclaim in-process (issue 17 item 4): unclaim ends deployments and group membership;
// a signed voucher moves claimed devices to another tenant after fresh proofs of possession, all or nothing;
// replayed, expired, edited, truncated and other-tenant vouchers are refused with nothing changed. On SQLite
// (unit) and PostgreSQL (service_postgres).
#include <doctest/doctest.h>

#include <openssl/evp.h>

#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "service/api.hpp"
#include "service/store.hpp"
#include "service/transfer_voucher.hpp"
#include "signing/signer.hpp"
#include "tests/service/service_fixture.hpp"
#include "tests/support/postgres.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;
using namespace kiln::service;
using Json = nlohmann::json;

namespace {

// ECDSA P-256 over SHA-256 of the message, DER: what a board signs.
std::string sign_hex(const test::TestKey& key, const std::string& message) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  std::size_t length = 0;
  const auto* data = reinterpret_cast<const unsigned char*>(message.data());
  REQUIRE(EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key.key.get()) == 1);
  REQUIRE(EVP_DigestSign(ctx.get(), nullptr, &length, data, message.size()) == 1);
  Bytes signature(length);
  REQUIRE(EVP_DigestSign(ctx.get(), signature.data(), &length, data, message.size()) == 1);
  signature.resize(length);
  return to_hex(signature);
}

// Tenant acme (ProductFixture: its factory CA, product Thermo) with two claimed devices of Thermo/Field Test,
// and tenants globex (which has a product Thermo too) and initech.
struct TransferFixture : test::ProductFixture {
  test::TenantApi globex_api{service_instance, "globex"};
  test::TenantApi initech_api{service_instance, "initech"};
  std::string globex_admin = globex_api.admin, initech_admin = initech_api.admin;
  test::TestKey ka, kb;
  std::vector<std::string> chain_a, chain_b;

  TransferFixture() {
    Json product = {{"name", "Thermo"}};
    releases.add_trust(product);
    globex_api.json("POST", "/v1/products", product.dump());  // the new owner's product of the same name
    chain_a = device("dev-a", ka, "Field Test");
    chain_b = device("dev-b", kb, "Field Test");
    claim("dev-a", ka);
    claim("dev-b", kb);
  }
  void claim(const std::string& uid, const test::TestKey& key) {
    auto c = json("POST", "/v1/devices/" + uid + "/claim-challenge");
    json("POST", "/v1/devices/" + uid + "/claim",
         Json{{"nonce", c["nonce"]}, {"signature", sign_hex(key, c["message"])}}.dump());
  }
  std::string voucher(std::vector<std::string> ids, std::int64_t expires_in = 3600, const std::string& to = "globex") {
    return json("POST", "/v1/device-transfers",
                Json{{"to_tenant", to}, {"devices", ids}, {"expires_in", expires_in}}.dump())
        .dump(2);
  }
  // Challenge and accept as `token`'s tenant, each device signing with its key (or `wrong` for dev-b).
  Response accept(const std::string& text, const std::string& token, const test::TestKey* wrong = nullptr) {
    auto r = call("POST", "/v1/device-transfers/challenge", Json{{"voucher", text}}.dump(), token);
    if (r.status != 201) return r;
    Json proofs = Json::array();
    auto answer = Json::parse(r.body);
    for (auto& c : answer["challenges"]) {
      const auto& key = c["device"] == "dev-a" ? ka : (wrong ? *wrong : kb);
      proofs.push_back({{"device", c["device"]}, {"nonce", c["nonce"]}, {"signature", sign_hex(key, c["message"])}});
    }
    return call("POST", "/v1/device-transfers/accept", Json{{"voucher", text}, {"proofs", proofs}}.dump(), token);
  }
};

}  // namespace

TEST_CASE("transfer: unclaim ends the device's deployment and group, keeps history, and refuses unknown UIDs") {
  TransferFixture f;
  auto made = f.release("v2", 2);
  auto id = f.json("POST", "/v1/deployments",
                   Json{{"group", "Thermo/Field Test"}, {"images", {made.first}}, {"manifest", made.second}}.dump())["id"]
                .get<std::string>();
  REQUIRE(f.json("POST", "/v1/agent/check-in", "{}", f.chain_a)["deployment"]["id"] == id);
  f.json("POST", "/v1/agent/status", Json{{"deployment", id}, {"status", "downloading"}}.dump(), f.chain_a);

  auto out = f.json("POST", "/v1/devices/dev-a/unclaim");
  CHECK(out["claimed"] == false);
  CHECK(out["group"].is_null());
  CHECK(out["deployments_left"] == Json::array({id}));
  // dev-a left the deployment (it is no longer in the group), counted neither as installed nor as failed;
  // dev-b still takes part.
  auto devices = f.json("GET", "/v1/deployments/" + id + "/devices");
  REQUIRE(devices["items"].size() == 1);
  CHECK(devices["items"][0]["device"] == "dev-b");
  auto shown = f.json("GET", "/v1/deployments/" + id);
  CHECK(shown["failures"].get<std::int64_t>() == 0);
  // Its agent is answered, with no update.
  CHECK(f.json("POST", "/v1/agent/check-in", "{}", f.chain_a)["deployment"].is_null());
  // Bad input: nothing changes.
  CHECK(f.call("POST", "/v1/devices/dev-a/unclaim").status == 409);
  CHECK(f.call("POST", "/v1/devices/nope/unclaim").status == 404);
  CHECK(f.call("POST", "/v1/devices/dev-b/unclaim", {}, f.globex_admin).status == 404);
  CHECK(f.json("GET", "/v1/devices/dev-b")["claimed"] == true);
  // The audit log names the action.
  auto audit = f.json("GET", "/v1/audit?action=device.unclaim");
  REQUIRE(audit["items"].size() >= 1);
  // Claimed again by its owner, it is back.
  f.claim("dev-a", f.ka);
  CHECK(f.json("GET", "/v1/devices/dev-a")["claimed"] == true);
}

TEST_CASE("transfer: a voucher moves claimed devices to the new tenant once, after proofs of possession") {
  TransferFixture f;
  auto text = f.voucher({"dev-a", "dev-b"});
  auto v = parse_transfer_voucher(text);
  CHECK(v.from_tenant == "acme");
  CHECK(v.to_tenant == "globex");
  CHECK(v.devices == std::vector<std::string>{"dev-a", "dev-b"});

  // A proof by the wrong key: refused, nothing moves, the voucher stays redeemable (all or nothing).
  test::TestKey other;
  auto wrong = f.accept(text, f.globex_admin, &other);
  CHECK_MESSAGE(wrong.status == 422, wrong.body);
  CHECK(TransferFixture::code(wrong) == "signature_invalid");
  CHECK(f.json("GET", "/v1/devices/dev-a")["claimed"] == true);
  CHECK(f.call("GET", "/v1/devices/dev-a", {}, f.globex_admin).status == 404);

  // Another tenant cannot redeem it.
  auto stranger = f.accept(text, f.initech_admin);
  CHECK(stranger.status == 403);
  CHECK(TransferFixture::code(stranger) == "voucher_wrong_tenant");

  auto ok = f.accept(text, f.globex_admin);
  REQUIRE(ok.status == 200);
  auto moved = Json::parse(ok.body);
  CHECK(moved["devices"].size() == 2);
  auto a = f.json("GET", "/v1/devices/dev-a", {}, f.globex_admin);
  CHECK(a["claimed"] == true);
  CHECK(a["group"].is_null());
  CHECK(f.call("GET", "/v1/devices/dev-a").status == 404);  // gone from acme
  // The agent keeps working (its certificate chains to acme's factory CA), now in globex.
  CHECK(f.json("POST", "/v1/agent/check-in", "{}", f.chain_a)["deployment"].is_null());

  // Replayed: refused.
  auto replay = f.accept(text, f.globex_admin);
  CHECK(replay.status == 409);
  CHECK(TransferFixture::code(replay) == "voucher_redeemed");
  auto audit = f.json("GET", "/v1/audit?action=device-transfer.accept", {}, f.globex_admin);
  CHECK(audit["items"].size() >= 1);
}

TEST_CASE("transfer: edited, truncated, foreign and expired vouchers are refused, nothing changed") {
  TransferFixture f;
  auto text = f.voucher({"dev-a"});
  auto edited = [&](const char* field, const Json& value) {
    auto j = Json::parse(text);
    j[field] = value;
    return j.dump(2);
  };
  for (const auto& bad : {edited("devices", Json::array({"dev-a", "dev-b"})), edited("expires_at", "2099-01-01T00:00:00Z"),
                          edited("from_tenant", "initech"), text.substr(0, text.size() / 2), std::string("[]"),
                          edited("id", "xfer_00000000000000000000000000000000")}) {
    auto r = f.accept(bad, f.globex_admin);
    INFO(bad);
    CHECK(r.status == 422);
    CHECK(TransferFixture::code(r) == "voucher_invalid");
  }
  // Re-indenting changes nothing: the signature covers the values.
  CHECK(f.call("POST", "/v1/device-transfers/challenge", Json{{"voucher", Json::parse(text).dump()}}.dump(),
               f.globex_admin)
            .status == 201);
  CHECK(f.json("GET", "/v1/devices/dev-a")["claimed"] == true);

  // Creation refuses unknown devices, unknown tenants, the own tenant and unclaimed devices.
  CHECK(f.call("POST", "/v1/device-transfers", Json{{"to_tenant", "globex"}, {"devices", {"nope"}}}.dump()).status ==
        404);
  CHECK(f.call("POST", "/v1/device-transfers", Json{{"to_tenant", "nobody"}, {"devices", {"dev-a"}}}.dump()).status ==
        404);
  CHECK(f.call("POST", "/v1/device-transfers", Json{{"to_tenant", "acme"}, {"devices", {"dev-a"}}}.dump()).status ==
        400);
  CHECK(f.call("POST", "/v1/device-transfers",
               Json{{"to_tenant", "globex"}, {"devices", {"dev-a"}}, {"expires_in", 0}}.dump())
            .status == 400);

  // A device unclaimed after the voucher was issued: the voucher cannot be redeemed.
  auto both = f.voucher({"dev-a", "dev-b"});
  f.json("POST", "/v1/devices/dev-b/unclaim");
  auto conflict = f.accept(both, f.globex_admin);
  CHECK(conflict.status == 409);
  CHECK(TransferFixture::code(conflict) == "transfer_conflict");
  CHECK(f.call("POST", "/v1/device-transfers", Json{{"to_tenant", "globex"}, {"devices", {"dev-b"}}}.dump()).status ==
        409);

  // The receiving tenant has no product of the devices' product name: refused before any challenge.
  auto to_initech = f.voucher({"dev-a"}, 3600, "initech");
  auto missing = f.accept(to_initech, f.initech_admin);
  CHECK(missing.status == 409);
  CHECK(TransferFixture::code(missing) == "product_missing");

  // Expired.
  auto brief = f.voucher({"dev-a"}, 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  auto expired = f.accept(brief, f.globex_admin);
  CHECK(expired.status == 422);
  CHECK(TransferFixture::code(expired) == "voucher_expired");
  CHECK(f.json("GET", "/v1/devices/dev-a")["claimed"] == true);
}

TEST_CASE("transfer: of two racing redemptions of one voucher, the store lets exactly one win") {
  test::TempDir dir;
  auto store = open_store(test::test_store(dir.file("kiln.db")));
  TransferVoucherRecord v;
  v.id = "xfer_0123456789abcdef0123456789abcdef";
  v.from_tenant_id = store->create_tenant("a", "2026-01-01T00:00:00Z");
  v.to_tenant_id = store->create_tenant("b", "2026-01-01T00:00:00Z");
  v.devices = {"d1", "d2"};
  v.payload_sha256 = std::string(64, 'a');
  v.public_key = "00";
  v.expires_at = 100;
  v.created_at = "2026-01-01T00:00:00Z";
  store->add_transfer_voucher(v);
  auto found = store->find_transfer_voucher(v.id);
  REQUIRE(found);
  CHECK(found->devices == v.devices);
  CHECK_FALSE(found->redeemed_at);
  CHECK(store->take_transfer_voucher(v.id, "2026-01-01T00:00:01Z"));
  CHECK_FALSE(store->take_transfer_voucher(v.id, "2026-01-01T00:00:02Z"));
  CHECK(store->find_transfer_voucher(v.id)->redeemed_at == "2026-01-01T00:00:01Z");
  CHECK_FALSE(store->find_transfer_voucher("xfer_ffffffffffffffffffffffffffffffff"));
}
