// Trust updates on the service (service/trust_updates.cpp, both stores): checked against the product's current
// trust before any device sees one, recorded so the product's keys follow the rotation, refused with 422 and
// nothing changed otherwise; a trust deployment hands the devices of its group that report an older trust version
// at check-in the missing ones in order, and counts them installed once they report its version.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <filesystem>

#include "core/base64.hpp"
#include "manifests/trust_update.hpp"
#include "signing/key_ref.hpp"
#include "tests/service/service_fixture.hpp"

using namespace kiln;
using Json = nlohmann::json;

namespace {

std::string publish_body(const Bytes& update) { return Json{{"update", to_base64(update)}}.dump(); }

Bytes signed_update(const trust::TrustUpdate& update, std::initializer_list<const Signer*> signers) {
  suit::Envelope envelope = trust::create(update);
  for (const Signer* s : signers) suit::add_signature(envelope, *s);
  return suit::encode_envelope(envelope);
}

}  // namespace

TEST_CASE("trust updates: the service checks and records them; a trust deployment hands them out in order") {
  test::ProductFixture f;
  const Signer& release = f.releases.manifest_key();  // Thermo's manifest key and boot key
  std::filesystem::create_directories(f.dir.path() / "second");
  test::TestReleaseMaker second(f.dir.path() / "second");
  const Signer& next = second.manifest_key();
  const Bytes release_der = release.public_key_der(), next_der = next.public_key_der();

  trust::TrustUpdate v1{"Thermo", 1, {release_der, next_der}, 2, {trust::boot_key_hash(next_der)}, {next_der}};
  const std::string path = "/v1/products/Thermo/trust-updates";

  // Refused, nothing recorded: unsigned, truncated, another product, not base64.
  auto unsigned_update = f.call("POST", path, publish_body(signed_update(v1, {})));
  CHECK(unsigned_update.status == 422);
  CHECK(test::TenantApi::message(unsigned_update).find("below threshold") != std::string::npos);
  Bytes v1_bytes = signed_update(v1, {&release});
  auto truncated = f.call("POST", path, publish_body(Bytes(v1_bytes.begin(), v1_bytes.end() - 5)));
  CHECK(truncated.status == 422);
  CHECK(test::TenantApi::message(truncated).find("not a valid trust update") != std::string::npos);
  trust::TrustUpdate oven = v1;
  oven.product = "Oven";
  CHECK(f.call("POST", path, publish_body(signed_update(oven, {&release}))).status == 422);
  CHECK(f.call("POST", path, R"({"update":"%%%"})").status == 400);
  CHECK(f.json("GET", path)["items"].empty());
  CHECK(f.json("GET", "/v1/products/Thermo")["manifest_keys"].size() == 1);

  // Accepted: the product's keys follow.
  auto accepted = f.call("POST", path, publish_body(v1_bytes));
  REQUIRE_MESSAGE(accepted.status == 201, accepted.body);
  auto product = f.json("GET", "/v1/products/Thermo");
  CHECK(product["manifest_keys"].size() == 2);
  CHECK(product["manifest_threshold"] == 2);
  CHECK(product["boot_keys"].size() == 1);
  CHECK(f.call("POST", path, publish_body(v1_bytes)).status == 422);  // replayed

  // Version 2 needs 2 of the 2 keys now in force.
  trust::TrustUpdate v2{"Thermo", 2, {next_der}, 1, {trust::boot_key_hash(next_der)}, {}};
  CHECK(f.call("POST", path, publish_body(signed_update(v2, {&next}))).status == 422);
  Bytes v2_bytes = signed_update(v2, {&next, &release});
  REQUIRE(f.call("POST", path, publish_body(v2_bytes)).status == 201);
  auto listed = f.json("GET", path)["items"];
  REQUIRE(listed.size() == 2);
  CHECK(listed[0]["version"] == 1);
  CHECK(listed[1]["version"] == 2);

  // Published only: no device is handed anything (updates travel through deployments).
  auto chain = f.assigned_device("dev-1", "Thermo/Field Test");
  f.json("POST", "/v1/groups", Json{{"product", "Thermo"}, {"name", "Lab"}}.dump());
  auto outside = f.assigned_device("dev-2", "Thermo/Lab");
  auto check_in = [&](const std::string& body, const std::vector<std::string>& who) {
    auto r = f.call("POST", "/v1/agent/check-in", body, test::Caller(who));
    REQUIRE(r.status == 200);
    return Json::parse(r.body);
  };
  CHECK_FALSE(check_in(R"({"trust_version":0})", chain).contains("trust_updates"));

  // A trust deployment of the newest recorded version to Field Test: its devices get every missing version.
  auto deploy = [&](const Bytes& update) {
    return f.call("POST", "/v1/deployments",
                  Json{{"group", "Thermo/Field Test"}, {"trust_update", to_base64(update)}}.dump());
  };
  CHECK(deploy(v1_bytes).status == 422);  // older than the product's version 2
  trust::TrustUpdate other_v2 = v2;
  other_v2.manifest_threshold = 1;
  other_v2.boot_key_hashes.push_back(trust::boot_key_hash(release_der));
  auto conflicting = deploy(signed_update(other_v2, {&next, &release}));
  CHECK(conflicting.status == 422);
  CHECK(test::TenantApi::message(conflicting).find("another trust update of version 2") != std::string::npos);
  auto created = deploy(v2_bytes);
  REQUIRE_MESSAGE(created.status == 201, created.body);
  auto deployment = Json::parse(created.body);
  CHECK(deployment["trust_version"] == 2);
  CHECK(deployment["carries"] == "trust_update");
  CHECK(deployment["images"].empty());
  CHECK(deploy(v2_bytes).status == 422);  // the group has it already

  // A device at trust version 0 gets both, in order; at 1 only the second; a device of another group none.
  auto all = check_in(R"({"trust_version":0})", chain);
  REQUIRE(all["trust_updates"].size() == 2);
  CHECK(all["trust_deployment"] == deployment["id"]);
  CHECK(all["trust_updates"][0]["version"] == 1);
  CHECK(from_base64(all["trust_updates"][0]["update"].get<std::string>()) == v1_bytes);
  CHECK(from_base64(all["trust_updates"][1]["update"].get<std::string>()) == v2_bytes);
  auto one = check_in(R"({"trust_version":1})", chain)["trust_updates"];
  REQUIRE(one.size() == 1);
  CHECK(one[0]["version"] == 2);
  CHECK_FALSE(check_in(R"({"trust_version":0})", outside).contains("trust_updates"));
  CHECK_FALSE(check_in("{}", chain).contains("trust_updates"));
  CHECK(f.call("POST", "/v1/agent/check-in", R"({"trust_version":-1})", test::Caller(chain)).status == 400);
  // It reports version 2: installed, and the deployment (its only device) completes; device show says 2.
  CHECK_FALSE(check_in(R"({"trust_version":2})", chain).contains("trust_updates"));
  auto shown = f.json("GET", "/v1/deployments/" + deployment["id"].get<std::string>());
  CHECK(shown["device_status"]["installed"] == 1);
  CHECK(shown["state"] == "completed");
  CHECK(f.json("GET", "/v1/devices/dev-1")["trust_version"] == 2);
  CHECK(f.json("GET", "/v1/devices/dev-2")["trust_version"] == 0);
  // Its agent reports only why it could not apply one; success is the version it reports.
  auto report = [&](const std::string& status) {
    return f.call("POST", "/v1/agent/status",
                  Json{{"deployment", deployment["id"]}, {"status", status}, {"detail", "x"}}.dump(),
                  test::Caller(chain));
  };
  CHECK(report("installed").status == 400);
  CHECK(report("refused").status == 200);
}
