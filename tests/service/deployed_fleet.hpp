// The fleet the deletion and audit tests share: a tenant with a product Thermo (its boards' keys), a device in
// Thermo/Field Test, an image with its manifest and an active deployment of them to that group; its admin is
// alice, with an operator (ops-bot) beside. Header-only.
#pragma once

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "service/api.hpp"
#include "tests/service/service_fixture.hpp"

namespace kiln::test {

struct DeployedFleet : ProductFixture {
  std::string ops = service.create_token(tenant, service::Role::operator_, "ops-bot");
  Deployed deployed = deploy("acme-dev", "acme");
  const std::string &device_uid = deployed.device_uid, &image = deployed.image, &manifest = deployed.manifest,
                    &deployment = deployed.deployment;

  DeployedFleet() : ProductFixture({.check_in_after = 7, .admin_name = "alice"}, true) {}
  service::Response agent(const std::string& method, const std::string& target, std::string body = "{}") {
    return call(method, target, std::move(body), deployed.device_chain);
  }
  std::filesystem::path blob(const std::string& sha) const {
    return dir.path() / "images" / std::to_string(tenant) / sha;
  }
  nlohmann::json audit(const std::string& query = {}) { return json("GET", "/v1/audit" + query)["items"]; }
};

}  // namespace kiln::test
