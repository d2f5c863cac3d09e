// libFuzzer: request parsing and validation in kiln_service_lib. The first byte picks a route, the rest is
// the body (or the query string, or a station's client certificate); the service must answer < 500 with a
// JSON error, never crash.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz/scratch_dir.hpp"
#include "service/api.hpp"
#include "tests/support/test_certificates.hpp"
#include "tests/support/test_release.hpp"

namespace {

struct Target {
  const char* method;
  const char* path;
  bool body_is_query;
  bool device = false;                      // an agent endpoint: sent with the device's certificate chain
  bool body_is_client_certificate = false;  // the bytes are a station's TLS client certificate (DER)
};

constexpr Target targets[] = {
    {"POST", "/v1/products", false},
    {"POST", "/v1/groups", false},
    {"PATCH", "/v1/groups/Thermo%2FProduction", false},
    {"POST", "/v1/devices/import", false},
    {"POST", "/v1/devices/dev-1/assign", false},
    {"POST", "/v1/devices/dev-1/claim", false},
    {"POST", "/v1/images", false},
    {"POST", "/v1/deployments", false},
    {"POST", "/v1/tokens", false},
    {"GET", "/v1/devices?", true},
    {"GET", "/v1/devices/count?", true},
    {"GET", "/v1/", true},
    {"POST", "/v1/factory-cas", false},
    {"POST", "/v1/agent/check-in", false, true},
    {"POST", "/v1/agent/status", false, true},
    {"POST", "/v1/images/0000000000000000000000000000000000000000000000000000000000000000/manifest", false},
    {"POST", "/v1/devices/import?import=fuzz&offset=0", false},
    {"GET", "/v1/whoami", false, false, true},
    {"POST", "/v1/factory-cas/challenge", false},
};

struct World {
  kiln::service::Service service{{":memory:", kiln::fuzz::scratch_dir() / "images"}};
  std::string token;
  std::vector<std::string> device_chain;
  World() {
    auto tenant = service.create_tenant("fuzz");
    token = service.create_token(tenant, kiln::service::Role::admin, "fuzz");
    call("POST", "/v1/products", R"({"name":"Thermo"})");
    // A device of the tenant with an agent certificate, in a group with an active deployment.
    kiln::test::TestCa ca("Fuzz Factory CA");
    kiln::test::TestKey key;
    auto challenge = call("POST", "/v1/factory-cas/challenge", nlohmann::json{{"certificate", ca.pem}}.dump());
    call("POST", "/v1/factory-cas", kiln::test::factory_ca_registration(ca, challenge.body));
    auto unit = nlohmann::json{{"uid", "dev-1"}, {"product", "Thermo"}, {"public_key", key.public_pem()}}.dump() + "\n";
    call("POST", "/v1/devices/import", kiln::test::signed_bundle(unit, ca.key));
    call("POST", "/v1/devices/dev-1/assign", R"({"group":"Thermo/Production"})");
    device_chain = {kiln::test::pem_to_der(ca.issue(key, "dev-1"))};
    // A release the product's boards would install: MCUboot image and SUIT manifest, signed by keys it trusts.
    auto dir = kiln::fuzz::scratch_dir() / "release";
    std::filesystem::create_directories(dir);
    kiln::test::TestReleaseMaker releases(dir);
    nlohmann::json trust = nlohmann::json::object();
    releases.add_trust(trust);
    call("PATCH", "/v1/products/Thermo", trust.dump());
    auto release = releases.make("fw", 2);
    std::filesystem::remove_all(dir);
    std::string ids[2];
    for (int i = 0; i < 2; ++i) {
      const std::string& blob = i == 0 ? release.image : release.envelope;
      ids[i] = kiln::to_hex(kiln::digest(kiln::HashAlg::sha256, kiln::as_bytes(blob)));
      call("POST", "/v1/images", nlohmann::json{{"sha256", ids[i]}, {"size", blob.size()}}.dump());
      service.handle({"PUT", "/v1/images/" + ids[i] + "/content?offset=0", {{"authorization", "Bearer " + token}}, blob, {}});
    }
    call("POST", "/v1/deployments",
         nlohmann::json{{"group", "Thermo/Production"}, {"images", {ids[0]}}, {"manifest", ids[1]}}.dump());
    // The agent targets are worth fuzzing only if the device is known: stop at once otherwise.
    auto offer = nlohmann::json::parse(call("POST", "/v1/agent/check-in", "{}", true).body, nullptr, false);
    if (!offer.is_object() || !offer["deployment"].is_object()) std::abort();
  }
  kiln::service::Response call(const std::string& method, const std::string& target, std::string body, bool device = false) {
    if (device) return service.handle({method, target, {}, std::move(body), device_chain});
    return service.handle({method, target, {{"authorization", "Bearer " + token}}, std::move(body), {}});
  }
  kiln::service::Response call_with_certificate(const std::string& method, const std::string& target, std::string der) {
    return service.handle({method, target, {}, {}, {std::move(der)}});
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static World world;
  if (size == 0) return 0;
  const Target& t = targets[data[0] % (sizeof targets / sizeof targets[0])];
  std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  auto response = t.body_is_client_certificate ? world.call_with_certificate(t.method, t.path, rest)
                 : t.body_is_query             ? world.call(t.method, t.path + rest, "")
                                               : world.call(t.method, t.path, rest, t.device);
  if (response.status >= 500) std::abort();
  if (response.status >= 400) {
    auto error = nlohmann::json::parse(response.body, nullptr, false);
    if (!error.is_object() || !error["error"].is_object()) std::abort();
  }
  return 0;
}
