// Tests for service/deletion (and the in-use checks images and the catalog make with it): deleting images,
// manifests, deployments, products and groups, in-process on the run's store (SQLite, or PostgreSQL under the
// service_postgres entry).
#include <doctest/doctest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "tests/service/deployed_fleet.hpp"

using namespace kiln;
using Json = nlohmann::json;
using Fleet = test::DeployedFleet;

TEST_CASE("deletion: an image or manifest in use by an unfinished deployment is refused (409) and kept") {
  Fleet f;
  REQUIRE(std::filesystem::exists(f.blob(f.image)));
  for (std::string state : {"active", "paused"}) {
    CAPTURE(state);
    if (state == "paused") f.json("POST", "/v1/deployments/" + f.deployment + "/pause");
    for (const auto& sha : {f.image, f.manifest}) {
      auto r = f.call("DELETE", "/v1/images/" + sha, {}, f.ops);
      CHECK(r.status == 409);
      CHECK(f.message(r).find(f.deployment + " (" + state + ")") != std::string::npos);
      CHECK(f.call("GET", "/v1/images/" + sha).status == 200);
      CHECK(std::filesystem::exists(f.blob(sha)));
    }
  }
  CHECK(f.call("DELETE", "/v1/deployments/" + f.deployment).status == 409);
  f.json("POST", "/v1/deployments/" + f.deployment + "/abort");

  // Finished: the image goes, with its content file; its manifest too, and nothing names it any more.
  CHECK(f.json("DELETE", "/v1/images/" + f.image, {}, f.ops) == Json{{"deleted", f.image}});
  CHECK_FALSE(std::filesystem::exists(f.blob(f.image)));
  CHECK(f.call("GET", "/v1/images/" + f.image).status == 404);
  CHECK(f.call("GET", "/v1/images/" + f.image + "/content").status == 404);
  CHECK(f.call("DELETE", "/v1/images/" + f.image).status == 404);
  f.json("DELETE", "/v1/images/" + f.manifest);
  CHECK_FALSE(std::filesystem::exists(f.blob(f.manifest)));
  CHECK(f.json("GET", "/v1/images")["items"].empty());
  CHECK(f.call("DELETE", "/v1/images/not-a-sha").status == 400);
}

TEST_CASE("deletion: only a finished deployment can be deleted; its device rows go with it") {
  Fleet f;
  REQUIRE(Json::parse(f.agent("POST", "/v1/agent/check-in").body)["deployment"]["id"] == f.deployment);
  REQUIRE(f.agent("POST", "/v1/agent/status", Json{{"deployment", f.deployment}, {"status", "downloading"}}.dump())
              .status < 300);
  auto refused = f.call("DELETE", "/v1/deployments/" + f.deployment, {}, f.ops);
  CHECK(refused.status == 409);
  CHECK(f.message(refused).find("is active") != std::string::npos);
  CHECK(f.call("GET", "/v1/deployments/" + f.deployment).status == 200);
  f.json("POST", "/v1/deployments/" + f.deployment + "/pause");
  CHECK(f.call("DELETE", "/v1/deployments/" + f.deployment).status == 409);
  f.json("POST", "/v1/deployments/" + f.deployment + "/abort");
  CHECK(f.json("DELETE", "/v1/deployments/" + f.deployment, {}, f.ops) == Json{{"deleted", f.deployment}});
  CHECK(f.call("GET", "/v1/deployments/" + f.deployment).status == 404);
  CHECK(f.call("GET", "/v1/deployments/" + f.deployment + "/devices").status == 404);
  CHECK(f.call("DELETE", "/v1/deployments/" + f.deployment).status == 404);
  CHECK(f.json("GET", "/v1/deployments")["items"].empty());
  // A superseded deployment is finished too.
  auto first = f.json("POST", "/v1/deployments", Json{{"group", "Thermo/Field Test"}, {"images", {f.image}}}.dump());
  auto second = f.json("POST", "/v1/deployments", Json{{"group", "Thermo/Field Test"}, {"images", {f.image}}}.dump());
  CHECK(f.json("GET", "/v1/deployments/" + first["id"].get<std::string>())["state"] == "superseded");
  f.json("DELETE", "/v1/deployments/" + first["id"].get<std::string>());
  CHECK(f.call("DELETE", "/v1/deployments/" + second["id"].get<std::string>()).status == 409);
}

TEST_CASE("deletion: a product or group that is not empty is refused (409); empty ones go") {
  Fleet f;
  auto group = f.call("DELETE", "/v1/groups/Thermo%2FField%20Test");
  CHECK(group.status == 409);
  CHECK(f.message(group).find("devices") != std::string::npos);
  f.json("POST", "/v1/devices/" + f.device_uid + "/assign", Json{{"group", "Thermo/Production"}}.dump());
  group = f.call("DELETE", "/v1/groups/Thermo%2FField%20Test");
  CHECK(group.status == 409);
  CHECK(f.message(group).find("1 deployments") != std::string::npos);
  auto product = f.call("DELETE", "/v1/products/Thermo");
  CHECK(product.status == 409);
  CHECK(f.message(product).find("devices") != std::string::npos);
  CHECK(f.call("GET", "/v1/groups/Thermo%2FField%20Test").status == 200);
  f.json("POST", "/v1/deployments/" + f.deployment + "/abort");
  f.json("DELETE", "/v1/deployments/" + f.deployment);
  f.json("DELETE", "/v1/groups/Thermo%2FField%20Test");
  CHECK(f.call("GET", "/v1/groups/Thermo%2FField%20Test").status == 404);
  f.json("DELETE", "/v1/groups/Thermo%2FDevelopment");  // never used: empty

  // A product with neither devices nor deployments goes, with its (empty) groups.
  auto empty = f.json("POST", "/v1/products", R"({"name":"Spare"})");
  CHECK(f.json("DELETE", "/v1/products/Spare") == Json{{"deleted", empty["id"]}});
  CHECK(f.call("GET", "/v1/groups/Spare%2FProduction").status == 404);  // its groups went with it
  CHECK(f.call("DELETE", "/v1/products/Spare").status == 404);
}
