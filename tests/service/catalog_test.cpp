// Tests for service/catalog.cpp in-process (both stores, as every service test): products with their default
// groups and trusted keys (shown as kiln key show does; fingerprints of the shared vector keys computed with
// openssl), slot sizes, groups by ID or Product/Group, updates, and every refusal with its status and message.
#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <nlohmann/json.hpp>

#include "core/files.hpp"
#include "service/api.hpp"
#include "tests/service/service_fixture.hpp"
#include "tests/support/test_certificates.hpp"
#include "tests/support/vectors.hpp"

using namespace kiln;
using namespace kiln::service;
using Json = nlohmann::json;

namespace {

// The public half of a shared vector key as PEM (`openssl pkey -pubout`).
std::string public_pem(const std::string& vector) {
  auto key_file = test::vector(vector);
  return test::public_key_pem_of_file(key_file);
}

const char* p256_fingerprint = "85c70615bb7659fd8014d385ac8b9f41fd946820037bd590d0e7cb642c463d22";
const char* ed25519_fingerprint = "009bfbaa15b2a5e1ac8b2bf101e4d24e2bbd4ae1c4c1a6fab89e5793d80974e3";
const char* rsa_fingerprint = "becac589b01e5f986f1e6ac89b9ac0d4b93eefa1fe92f83be11e5e378561603f";
const char* rsa_mcuboot_key_hash = "128ff605b18d0af0e2f60715c2f90a71598b47faed9e14de7a587125e1bff5d5";

}  // namespace

TEST_CASE("catalog: a product starts with three groups, the default slot size and its keys as kiln shows them") {
  test::ServiceFixture f;
  Json body = {{"name", "Thermo"},
               {"description", "room thermostat"},
               {"boot_keys", {public_pem("mcuboot/rsa-2048.pem"), public_pem("mcuboot/rsa-2048.pem")}},
               {"manifest_keys", {public_pem("mcuboot/ecdsa-p256.pem")}}};
  auto r = f.call("POST", "/v1/products", body.dump());
  REQUIRE(r.status == 201);
  auto product = Json::parse(r.body);
  CHECK(product["id"].get<std::string>().starts_with("prd_"));
  CHECK(product["name"] == "Thermo");
  CHECK(product["description"] == "room thermostat");
  CHECK(product["slot_size"] == 16777216);
  CHECK(product["groups"] == Json::array({"Thermo/Development", "Thermo/Field Test", "Thermo/Production"}));
  REQUIRE(product["boot_keys"].size() == 1);  // the same key twice is kept once
  CHECK(product["boot_keys"][0] == Json{{"type", "rsa-2048"}, {"fingerprint", rsa_fingerprint},
                                        {"mcuboot_key_hash", rsa_mcuboot_key_hash}});
  CHECK(product["manifest_keys"][0] == Json{{"type", "ecdsa-p256"}, {"fingerprint", p256_fingerprint},
                                            {"mcuboot_key_hash", p256_fingerprint}});

  auto shown = f.json("GET", "/v1/products/Thermo");
  CHECK(shown["id"] == product["id"]);
  CHECK(shown["devices"] == 0);
  CHECK(f.json("GET", "/v1/products/" + product["id"].get<std::string>())["name"] == "Thermo");
  auto groups = f.json("GET", "/v1/groups?product=Thermo")["items"];
  REQUIRE(groups.size() == 3);
  for (const auto& g : groups) CHECK(g["product"] == "Thermo");  // groups name their product
  auto listed = f.json("GET", "/v1/products")["items"];
  REQUIRE(listed.size() == 1);
  CHECK(listed[0]["boot_keys"] == product["boot_keys"]);
}

TEST_CASE("catalog: product refusals name what is wrong") {
  test::ServiceFixture f;
  f.json("POST", "/v1/products", R"({"name":"Thermo"})");
  auto refused = [&](const std::string& method, const std::string& target, const Json& body, int status,
                     const std::string& message) {
    auto r = f.call(method, target, body.dump());
    CHECK(r.status == status);
    CHECK(test::TenantApi::message(r) == message);
  };
  refused("POST", "/v1/products", Json{{"name", "Thermo"}}, 409, "product Thermo already exists");
  refused("POST", "/v1/products", Json{{"name", "a/b"}}, 400, "a product name cannot contain '/'");
  refused("POST", "/v1/products", Json{{"name", "Lamp"}, {"slot_size", 1023}}, 400,
          "field 'slot_size' must be a number of bytes, 1024..4294967296");
  refused("POST", "/v1/products", Json{{"name", "Lamp"}, {"slot_size", "1M"}}, 400,
          "field 'slot_size' must be a number of bytes, 1024..4294967296");
  refused("POST", "/v1/products", Json{{"name", "Lamp"}, {"boot_keys", "-----BEGIN PUBLIC KEY-----"}}, 400,
          "field 'boot_keys' must be an array of at most 8 PEM public keys");
  refused("POST", "/v1/products", Json{{"name", "Lamp"}, {"boot_keys", Json::array({42})}}, 400,
          "field 'boot_keys' must hold PEM public keys");
  refused("POST", "/v1/products", Json{{"name", "Lamp"}, {"manifest_keys", Json::array({"not a key"})}}, 400,
          "field 'manifest_keys' holds something that is not a PEM public key (-----BEGIN PUBLIC KEY-----)");
  Json nine = Json::array();
  for (int i = 0; i < 9; ++i) nine.push_back(public_pem("mcuboot/ed25519.pem"));
  refused("POST", "/v1/products", Json{{"name", "Lamp"}, {"boot_keys", nine}}, 400,
          "field 'boot_keys' must be an array of at most 8 PEM public keys");
  // A key OpenSSL reads but kiln cannot use: an X25519 key.
  {
    EVP_PKEY* x25519 = EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519");
    REQUIRE(x25519);
    BIO* bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, x25519);
    std::string pem = test::bio_text(bio);
    BIO_free(bio);
    EVP_PKEY_free(x25519);
    refused("POST", "/v1/products", Json{{"name", "Lamp"}, {"boot_keys", Json::array({pem})}}, 400,
            "field 'boot_keys' holds an unusable key: unsupported public key algorithm");
  }
  refused("GET", "/v1/products/Lamp", Json(), 404, "product Lamp not found");
  refused("PATCH", "/v1/products/Lamp", Json::object(), 404, "product Lamp not found");
  refused("DELETE", "/v1/products/Lamp", Json(), 404, "product Lamp not found");
  CHECK(f.json("GET", "/v1/products")["items"].size() == 1);  // nothing refused was created
}

TEST_CASE("catalog: PATCH changes the keys and slot size it names and keeps the others") {
  test::ServiceFixture f;
  Json body = {{"name", "Thermo"}, {"boot_keys", {public_pem("mcuboot/ed25519.pem")}}, {"slot_size", 262144}};
  f.json("POST", "/v1/products", body.dump());
  auto patched = f.json("PATCH", "/v1/products/Thermo",
                        Json{{"manifest_keys", {public_pem("mcuboot/ecdsa-p256.pem")}}}.dump());
  CHECK(patched["boot_keys"][0]["fingerprint"] == ed25519_fingerprint);
  CHECK(patched["manifest_keys"][0]["fingerprint"] == p256_fingerprint);
  CHECK(patched["slot_size"] == 262144);
  CHECK(patched["devices"] == 0);
  patched = f.json("PATCH", "/v1/products/Thermo", R"({"slot_size": 4294967296, "boot_keys": []})");
  CHECK(patched["slot_size"] == 4294967296LL);
  CHECK(patched["boot_keys"].empty());
  CHECK(patched["manifest_keys"].size() == 1);
  auto stored = f.json("GET", "/v1/products/Thermo");
  CHECK(stored["slot_size"] == 4294967296LL);
  CHECK(stored["boot_keys"].empty());
  CHECK(stored["manifest_keys"][0]["fingerprint"] == p256_fingerprint);
  auto r = f.call("PATCH", "/v1/products/Thermo", R"({"slot_size": 4294967297})");
  CHECK(r.status == 400);
  CHECK(f.json("GET", "/v1/products/Thermo")["slot_size"] == 4294967296LL);
}

TEST_CASE("catalog: groups by ID or Product/Group, renamed, described and deleted") {
  test::ServiceFixture f;
  f.json("POST", "/v1/products", R"({"name":"Thermo"})");
  f.json("POST", "/v1/products", R"({"name":"Lamp"})");
  auto r = f.call("POST", "/v1/groups", R"({"product":"Thermo","name":"Beta","description":"early adopters"})");
  REQUIRE(r.status == 201);
  auto group = Json::parse(r.body);
  const std::string id = group["id"];
  CHECK(id.starts_with("grp_"));
  CHECK(group["name"] == "Beta");
  CHECK(group["description"] == "early adopters");
  CHECK(f.json("GET", "/v1/groups/" + id)["devices"] == 0);
  CHECK(f.json("GET", "/v1/groups/Thermo%2FBeta")["id"] == id);
  CHECK(f.json("GET", "/v1/groups?product=Thermo")["items"].size() == 4);
  CHECK(f.json("GET", "/v1/groups?product=Lamp")["items"].size() == 3);
  CHECK(f.json("GET", "/v1/groups")["items"].size() == 7);
  // The same name in another product is another group.
  CHECK(f.call("POST", "/v1/groups", R"({"product":"Lamp","name":"Beta"})").status == 201);

  auto renamed = f.json("PATCH", "/v1/groups/Thermo%2FBeta", R"({"name":"Pilot"})");
  CHECK(renamed["id"] == id);
  CHECK(renamed["name"] == "Pilot");
  CHECK(renamed["description"] == "early adopters");
  CHECK(f.json("PATCH", "/v1/groups/" + id, R"({"description":""})")["description"] == "");
  CHECK(f.call("GET", "/v1/groups/Thermo%2FBeta").status == 404);

  CHECK(f.json("DELETE", "/v1/groups/Thermo%2FPilot")["deleted"] == id);
  CHECK(f.call("GET", "/v1/groups/" + id).status == 404);
  CHECK(f.json("GET", "/v1/groups?product=Thermo")["items"].size() == 3);
}

TEST_CASE("catalog: group refusals name what is wrong") {
  test::ServiceFixture f;
  f.json("POST", "/v1/products", R"({"name":"Thermo"})");
  auto check = [&](const std::string& method, const std::string& target, const std::string& body, int status,
                   const std::string& message) {
    auto r = f.call(method, target, body);
    CHECK(r.status == status);
    CHECK(test::TenantApi::message(r) == message);
  };
  check("POST", "/v1/groups", R"({"product":"Thermo","name":"Production"})", 409, "group Production already exists");
  check("POST", "/v1/groups", R"({"product":"Lamp","name":"Beta"})", 404, "product Lamp not found");
  check("GET", "/v1/groups/grp_nope", "", 404, "group grp_nope not found (use an ID or Product/Group)");
  check("GET", "/v1/groups/Thermo%2FNope", "", 404, "group Thermo/Nope not found");
  check("GET", "/v1/groups/Lamp%2FProduction", "", 404, "product Lamp not found");
  check("GET", "/v1/groups?product=Lamp", "", 404, "product Lamp not found");
  check("PATCH", "/v1/groups/Thermo%2FProduction", R"({"name":""})", 400, "field 'name' cannot be empty");
  check("DELETE", "/v1/groups/Thermo%2FNope", "", 404, "group Thermo/Nope not found");
}

TEST_CASE("catalog: a product or group with devices is not deleted; an empty product goes with its groups") {
  test::ProductFixture f;
  test::TestKey key;
  f.device("dev-1", key, "Field Test");
  auto product = f.json("GET", "/v1/products/Thermo");
  CHECK(product["devices"] == 1);
  CHECK(f.json("GET", "/v1/groups/Thermo%2FField%20Test")["devices"] == 1);
  auto r = f.call("DELETE", "/v1/groups/Thermo%2FField%20Test");
  CHECK(r.status == 409);
  CHECK(test::TenantApi::message(r) == "group Thermo/Field Test still has 1 devices: assign them elsewhere first");
  r = f.call("DELETE", "/v1/products/Thermo");
  CHECK(r.status == 409);
  CHECK(test::TenantApi::message(r) == "product Thermo still has 1 devices");
  CHECK(f.json("GET", "/v1/groups?product=Thermo")["items"].size() == 3);

  f.json("POST", "/v1/products", R"({"name":"Lamp"})");
  auto lamp_groups = f.json("GET", "/v1/groups?product=Lamp")["items"];
  REQUIRE(lamp_groups.size() == 3);
  auto deleted = f.json("DELETE", "/v1/products/Lamp");
  CHECK(deleted["deleted"].get<std::string>().starts_with("prd_"));
  CHECK(f.call("GET", "/v1/products/Lamp").status == 404);
  for (const auto& g : lamp_groups) CHECK(f.call("GET", "/v1/groups/" + g["id"].get<std::string>()).status == 404);
  CHECK(f.json("GET", "/v1/products")["items"].size() == 1);
}
