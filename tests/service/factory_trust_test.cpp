// Tests for service/factory_trust on the run's store (SQLite, or PostgreSQL in service_postgres): certificate
// facts, the proof message, which keys a tenant trusts, chains to its CAs (and not to another tenant's),
// revoked CAs, station certificates, and finding a CA by ID, prefix or name.
#include <doctest/doctest.h>
#include <openssl/x509.h>

#include <algorithm>
#include <string>
#include <vector>

#include "service/factory_trust.hpp"
#include "service/handlers.hpp"
#include "tests/service/service_fixture.hpp"
#include "tests/support/test_certificates.hpp"

using namespace kiln;
using namespace kiln::service;

namespace {

// The service on a database this test opens too.
struct Fixture : test::ServiceFixture {
  Fixture() : test::ServiceFixture(test::ServiceOptions{"kiln.db"}) {}
};

// DER SubjectPublicKeyInfo of a test key, straight from OpenSSL.
Bytes spki_of(const test::TestKey& key) {
  int len = i2d_PUBKEY(key.key.get(), nullptr);
  REQUIRE(len > 0);
  Bytes der(static_cast<std::size_t>(len));
  unsigned char* p = der.data();
  i2d_PUBKEY(key.key.get(), &p);
  return der;
}

}  // namespace

TEST_CASE("factory_trust: certificate facts from PEM and DER, nothing from other text") {
  test::TestCa ca("Acme Factory CA");
  auto facts = certificate_facts(ca.pem);
  REQUIRE(facts);
  CHECK(facts->common_name == "Acme Factory CA");
  CHECK(facts->public_key == spki_of(ca.key));
  auto der = test::pem_to_der(ca.pem);
  CHECK(certificate_public_key(der) == spki_of(ca.key));
  CHECK(certificate_common_name(der) == "Acme Factory CA");
  CHECK_FALSE(certificate_facts("not a certificate"));
  CHECK(certificate_public_key("").empty());
  CHECK(certificate_common_name(ca.key.public_pem()).empty());
  CHECK(factory_ca_proof_message(7, "ab12", "n0nce") == "kiln-factory-ca-v1:7:ab12:n0nce");
}

TEST_CASE("factory_trust: a tenant trusts the CAs it registered, for device chains and station logins") {
  Fixture f;
  test::TestCa devices_ca("Acme Factory CA");
  test::TestCa station_ca("Acme Station CA");
  auto store = open_store(f.database);
  std::vector<std::string> none;
  test::TestKey device;
  std::vector<std::string> chain = {test::pem_to_der(devices_ca.issue(device, "dev-1"))};
  CHECK(factory_ca_keys(*store, f.tenant).empty());
  CHECK(chain_error(*store, f.tenant, chain) == no_factory_ca_registered);

  f.add_ca(devices_ca);
  f.add_ca(station_ca, true);
  auto keys = factory_ca_keys(*store, f.tenant);
  CHECK(keys.size() == 2);
  CHECK(std::find(keys.begin(), keys.end(), spki_of(devices_ca.key)) != keys.end());
  CHECK(chain_error(*store, f.tenant, chain).empty());
  test::TestCa stranger("Stranger CA");
  std::vector<std::string> foreign = {test::pem_to_der(stranger.issue(device, "dev-1"))};
  CHECK_FALSE(chain_error(*store, f.tenant, foreign).empty());

  // Another tenant has none of these.
  auto other = f.service.create_tenant("globex");
  CHECK(factory_ca_keys(*store, other).empty());
  CHECK(chain_error(*store, other, chain) == no_factory_ca_registered);

  // Stations log in with certificates of a CA registered for stations only.
  test::TestKey station_key;
  std::string why;
  auto station = find_station(*store, {test::pem_to_der(station_ca.issue(station_key, "line-3"))}, why);
  REQUIRE(station);
  CHECK(station->tenant_id == f.tenant);
  CHECK(station->name == "line-3");
  CHECK_FALSE(find_station(*store, chain, why));  // a device's chain is never a station
  CHECK_FALSE(why.empty());
  CHECK_FALSE(revoked_factory_ca(*store, f.tenant, chain));
}

TEST_CASE("factory_trust: a revoked CA is found by its chain or key and trusted only for what it already made") {
  Fixture f;
  test::TestCa ca("Acme Factory CA");
  f.add_ca(ca);
  auto store = open_store(f.database);
  auto record = find_factory_ca(*store, f.tenant, "Acme Factory CA");
  f.json("POST", "/v1/factory-cas/" + record.id + "/revoke", R"({"reason":"key leaked"})");
  test::TestKey device;
  std::vector<std::string> chain = {test::pem_to_der(ca.issue(device, "dev-1"))};
  auto revoked = revoked_factory_ca(*store, f.tenant, chain);
  REQUIRE(revoked);
  CHECK(revoked->id == record.id);
  CHECK(revoked->revoked_reason == "key leaked");
  CHECK(revoked->revoked_at);
  auto by_key = revoked_factory_ca(*store, f.tenant, {}, spki_of(ca.key));
  REQUIRE(by_key);
  CHECK(by_key->id == record.id);
  CHECK(chain_error(*store, f.tenant, chain) == no_factory_ca_registered);  // not for new imports or logins
  CHECK(chain_error(*store, f.tenant, chain, true).empty());               // but its devices stay
  CHECK(factory_ca_keys(*store, f.tenant).empty());
}

TEST_CASE("factory_trust: a CA is found by ID, a unique prefix of 8 or more hex digits, or its name") {
  Fixture f;
  test::TestCa a("Line A CA");
  test::TestCa b("Line B CA");
  f.add_ca(a);
  f.add_ca(b);
  auto store = open_store(f.database);
  auto ra = find_factory_ca(*store, f.tenant, "Line A CA");
  auto rb = find_factory_ca(*store, f.tenant, "Line B CA");
  CHECK(ra.id != rb.id);
  CHECK(ra.id == to_hex(digest(HashAlg::sha256, as_bytes(test::pem_to_der(a.pem)))));  // its certificate's SHA-256
  CHECK(find_factory_ca(*store, f.tenant, ra.id).id == ra.id);
  CHECK(find_factory_ca(*store, f.tenant, ra.id.substr(0, 8)).id == ra.id);
  auto refused = [&](const std::string& ref) -> ApiError {
    try {
      find_factory_ca(*store, f.tenant, ref);
    } catch (const ApiError& e) {
      return e;
    }
    return ApiError{0, "", ""};
  };
  auto short_prefix = refused(ra.id.substr(0, 7));
  CHECK(short_prefix.status == 404);
  CHECK(short_prefix.message == "factory CA " + ra.id.substr(0, 7) + " not found");
  CHECK(refused("Line C CA").status == 404);
  // Two CAs under one name: ambiguous.
  test::TestCa a2("Line A CA");
  f.add_ca(a2);
  auto twice = refused("Line A CA");
  CHECK(twice.status == 409);
  CHECK(twice.message == "2 factory CAs match 'Line A CA': name one by its ID (kiln device ca list)");
  // Another tenant cannot find them.
  auto other = f.service.create_tenant("globex");
  CHECK(find_factory_ca(*store, f.tenant, "Line B CA").id == rb.id);
  try {
    find_factory_ca(*store, other, rb.id);
    FAIL("another tenant's CA was found");
  } catch (const ApiError& e) {
    CHECK(e.status == 404);
  }
}
