// The in-process service the service tests share: a Service on the run's store (SQLite, or PostgreSQL in the
// service_postgres run) with tenant "acme" and its admin token, and the calls every test makes of its API.
// ProductFixture adds a registered factory CA, the product Thermo trusting a release maker's keys, devices
// imported under that CA and releases uploaded with their manifests. Header-only.
#pragma once

#include <doctest/doctest.h>

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "service/api.hpp"
#include "signing/signer.hpp"
#include "tests/support/postgres.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_certificates.hpp"
#include "tests/support/test_release.hpp"

namespace kiln::test {

// Who makes a call: a bearer token (the fixture's admin token when none is named), or, for the agent endpoints,
// a device's certificate chain and no token; with any extra headers.
struct Caller {
  std::string token;
  std::vector<std::string> chain;
  std::map<std::string, std::string> headers;
  bool anonymous = false;

  Caller() = default;
  Caller(std::string bearer) : token(std::move(bearer)) {}       // NOLINT(google-explicit-constructor)
  Caller(const char* bearer) : token(bearer) {}                  // NOLINT(google-explicit-constructor)
  Caller(std::vector<std::string> certificates) : chain(std::move(certificates)) {}  // NOLINT
  // A braced list would read as a token: name a chain as std::vector<std::string>{…}.
  Caller(std::initializer_list<std::string>) = delete;
  // No token and no certificate (or only the headers given).
  static Caller nobody(std::map<std::string, std::string> headers = {}) {
    Caller c;
    c.anonymous = true;
    c.headers = std::move(headers);
    return c;
  }
  Caller& with(std::map<std::string, std::string> extra) {
    for (auto& h : extra) headers[h.first] = h.second;
    return *this;
  }
};

// What the service logged, line by line.
struct ServiceLog {
  std::mutex mutex;
  std::vector<std::string> lines;
  bool any(const std::string& a, const std::string& b) {
    std::lock_guard lock(mutex);
    for (auto& line : lines)
      if (line.find(a) != std::string::npos && line.find(b) != std::string::npos) return true;
    return false;
  }
};

struct ServiceOptions {
  std::string sqlite = ":memory:";  // or a file name in the fixture's directory (the run may use PostgreSQL)
  bool on_disk = false;             // a SQLite file (dir/kiln.db) whatever the run's backend: the test opens it too
  int check_in_after = 60;
  std::string admin_name = "admin";  // the admin token's name (the actor in the audit log)
};

// One tenant's view of a service: the calls its admin token (or another token, or a device) makes.
class TenantApi {
 public:
  using Json = nlohmann::json;

  service::Service& service;
  std::int64_t tenant;
  std::string admin;

  TenantApi(service::Service& s, const std::string& name, const std::string& admin_name = "admin")
      : service(s), tenant(s.create_tenant(name)), admin(s.create_token(tenant, service::Role::admin, admin_name)) {}

  // A call as `who` (default: the admin token).
  service::Response call(const std::string& method, const std::string& target, std::string body = {},
                         Caller who = {}) {
    auto headers = who.headers;
    if (!who.anonymous && who.chain.empty())
      headers["authorization"] = "Bearer " + (who.token.empty() ? admin : who.token);
    service::Request request{method, target, headers, {}, std::move(who.chain)};
    // Image chunks come as kiln-service hands them over: a stream the service spools (in small pieces here).
    if (method == "PUT")
      request.read_body = [&body](const service::ByteReceiver& receive) {
        for (std::size_t at = 0; at < body.size(); at += 1000)
          if (!receive(body.data() + at, std::min<std::size_t>(1000, body.size() - at))) return false;
        return true;
      };
    else
      request.body = std::move(body);
    auto response = service.handle(request);
    // Streamed content (image downloads), read whole for the checks.
    if (response.stream) {
      response.stream->send(0, response.stream->size(), [&](const char* data, std::size_t length) {
        response.body.append(data, length);
        return true;
      });
      response.stream.reset();
    }
    return response;
  }
  // A call that must succeed (status below 300): its JSON body.
  Json json(const std::string& method, const std::string& target, std::string body = {}, Caller who = {}) {
    auto r = call(method, target, std::move(body), std::move(who));
    INFO(method << " " << target << " -> " << r.status << " " << r.body);
    REQUIRE(r.status < 300);
    return Json::parse(r.body);
  }
  // Uploads `content` as an image (by the admin, or `token`); its SHA-256, hex.
  std::string upload(const std::string& content, const std::string& token = {}) {
    auto sha = to_hex(digest(HashAlg::sha256, as_bytes(content)));
    json("POST", "/v1/images", Json{{"sha256", sha}, {"size", content.size()}}.dump(), token);
    json("PUT", "/v1/images/" + sha + "/content?offset=0", content, token);
    return sha;
  }
  // POST /v1/factory-cas with proof of possession of the CA's key (or `signer`'s): the response.
  service::Response register_ca(const TestCa& ca, bool stations = false, const TestKey* signer = nullptr,
                                const std::string& token = {}) {
    auto challenge = call("POST", "/v1/factory-cas/challenge", Json{{"certificate", ca.pem}}.dump(), token);
    REQUIRE(challenge.status == 201);
    return call("POST", "/v1/factory-cas", factory_ca_registration(ca, challenge.body, stations, signer), token);
  }
  Json add_ca(const TestCa& ca, bool stations = false, const std::string& token = {}) {
    auto r = register_ca(ca, stations, nullptr, token);
    INFO(r.body);
    REQUIRE(r.status < 300);
    return Json::parse(r.body);
  }
  // The error code and message of a refused call.
  static std::string code(const service::Response& r) {
    auto j = Json::parse(r.body, nullptr, false);
    return j.is_object() && j.contains("error") ? j["error"]["code"].get<std::string>() : "";
  }
  static std::string message(const service::Response& r) {
    return Json::parse(r.body)["error"]["message"].get<std::string>();
  }
};

// A tenant with its factory CA registered (it also signs ledger bundles) and the product Thermo trusting
// `releases`' boot and manifest keys (kept in `dir`).
class ProductTenant : public TenantApi {
 public:
  TestCa factory_ca;
  TestReleaseMaker releases;

  // `product`: also create Thermo (else the test creates its own).
  ProductTenant(service::Service& s, const std::string& name, const std::filesystem::path& dir, bool stations = false,
                const std::string& admin_name = "admin", bool product = true)
      : TenantApi(s, name, admin_name), factory_ca(name == "acme" ? "Acme Factory CA" : name + " Factory CA"),
        releases(dir) {
    add_ca(factory_ca, stations);
    if (product) create_product();
  }
  // The product Thermo, trusting the release keys.
  void create_product() {
    Json product = {{"name", "Thermo"}};
    releases.add_trust(product);
    json("POST", "/v1/products", product.dump());
  }

  // A unit line of Thermo for a ledger bundle, with `extra` fields (group, certificate, version…).
  static std::string unit(const std::string& uid, const TestKey& key, const Json& extra = Json::object()) {
    Json u = {{"uid", uid}, {"product", "Thermo"}, {"public_key", key.public_pem()}};
    for (auto it = extra.begin(); it != extra.end(); ++it) u[it.key()] = it.value();
    return u.dump() + "\n";
  }
  // Imports units in a bundle signed by the factory CA.
  Json import(const std::string& units) { return json("POST", "/v1/devices/import", signed_bundle(units, factory_ca.key)); }
  // Imports the device (into `group` of Thermo when named, e.g. "Field Test"); its certificate chain for the agent
  // endpoints.
  std::vector<std::string> device(const std::string& uid, const TestKey& key, const std::string& group = {}) {
    import(unit(uid, key, group.empty() ? Json::object() : Json{{"group", group}}));
    return {pem_to_der(factory_ca.issue(key, uid))};
  }
  // A device with a key of its own, imported and assigned to `group` ("Thermo/Field Test"); its chain.
  std::vector<std::string> assigned_device(const std::string& uid, const std::string& group) {
    TestKey key;
    auto chain = device(uid, key);
    json("POST", "/v1/devices/" + uid + "/assign", Json{{"group", group}}.dump());
    return chain;
  }
  // A device of Thermo/`group`, claimed with a proof of possession signed by its key; its certificate chain.
  std::vector<std::string> claimed_device(const std::string& uid, const std::string& group = "Field Test") {
    TestKey key;
    auto chain = device(uid, key, group);
    auto challenge = json("POST", "/v1/devices/" + uid + "/claim-challenge");
    json("POST", "/v1/devices/" + uid + "/claim",
         Json{{"nonce", challenge["nonce"]},
              {"signature", sign_message_hex(key, challenge["message"].get<std::string>())}}
             .dump());
    return chain;
  }
  // A release uploaded and its manifest linked: {image, manifest}.
  std::pair<std::string, std::string> release(const std::string& name, std::uint64_t sequence) {
    auto made = releases.make(name, sequence);
    auto image = upload(made.image), manifest = upload(made.envelope);
    json("POST", "/v1/images/" + image + "/manifest", Json{{"manifest", manifest}}.dump());
    return {image, manifest};
  }

  // A device assigned to Thermo/Field Test and an active deployment of release `name` (sequence 3) to that group.
  struct Deployed {
    std::string device_uid, image, manifest, deployment;
    std::vector<std::string> device_chain;  // the device's certificate chain, for the agent endpoints
  };
  Deployed deploy(const std::string& device_uid, const std::string& name) {
    Deployed d;
    d.device_uid = device_uid;
    d.device_chain = assigned_device(device_uid, "Thermo/Field Test");
    std::tie(d.image, d.manifest) = release(name, 3);
    d.deployment = json("POST", "/v1/deployments",
                        Json{{"group", "Thermo/Field Test"}, {"images", {d.image}}}.dump())["id"].get<std::string>();
    return d;
  }
};

// What a fixture owns before its tenant exists: its directory, log and service.
struct ServiceHolder {
  TempDir dir;
  std::shared_ptr<ServiceLog> log = std::make_shared<ServiceLog>();
  std::string database;
  service::Service service_instance;

  explicit ServiceHolder(const ServiceOptions& o)
      : database(o.on_disk ? dir.file("kiln.db")
                           : test_store(o.sqlite == ":memory:" ? o.sqlite : std::string(dir.file(o.sqlite)))),
        service_instance(config(o)) {}

 private:
  service::ServiceConfig config(const ServiceOptions& o) {
    service::ServiceConfig c{database, dir.path() / "images", o.check_in_after};
    c.log = [sink = log](const std::string& line) {
      std::lock_guard lock(sink->mutex);
      sink->lines.push_back(line);
    };
    return c;
  }
};

// The message of a refused call's error, else the whole body (for a CHECK's output).
inline std::string error_message(const service::Response& r) {
  auto body = nlohmann::json::parse(r.body, nullptr, false);
  return body.is_object() && body.contains("error") ? body["error"]["message"].get<std::string>() : r.body;
}

// The service with tenant "acme" and its admin token.
class ServiceFixture : public ServiceHolder, public TenantApi {
 public:
  explicit ServiceFixture(ServiceOptions options = {})
      : ServiceHolder(options), TenantApi(service_instance, "acme", options.admin_name) {}
};

// The service with the factory station CA "Test Station CA" registered (--stations): the CA whose signed ledger
// bundles (docs/ledger-bundle.md) the tenant imports.
class StationFixture : public ServiceFixture {
 public:
  TestCa station{"Test Station CA"};
  explicit StationFixture(ServiceOptions options = {}) : ServiceFixture(options) { add_ca(station, true); }
  // Unit lines as a bundle signed by the station.
  std::string bundle(const std::string& units) const { return signed_bundle(units, station.key); }
};

// The service with tenant "acme" as a ProductTenant.
class ProductFixture : public ServiceHolder, public ProductTenant {
 public:
  explicit ProductFixture(ServiceOptions options = {}, bool stations = false, bool product = true)
      : ServiceHolder(options),
        ProductTenant(service_instance, "acme", dir.path(), stations, options.admin_name, product) {}
};

// The service with the factory CA registered, devices checking in every 7 s; the product Thermo comes when the
// test asks (create_product).
struct AgentFixture : ProductFixture {
  AgentFixture() : ProductFixture({.check_in_after = 7}, false, false) {}
};

}  // namespace kiln::test
