// One version everywhere: the build's version from --version of all three programs and the service's /v1/version.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "kiln/version.hpp"
#include "tests/support/process.hpp"
#include "tests/support/service_process.hpp"
#include "tests/support/temp_dir.hpp"
#include "transport/http_client.hpp"

using namespace kiln;

TEST_CASE("version: kiln, kiln-service and kiln-board-emu print the build's version") {
  // A Debian version: digits first, then only [0-9A-Za-z.+~] (no hyphen, so no Debian revision clash).
  std::string version = KILN_VERSION;
  REQUIRE(!version.empty());
  CHECK(std::isdigit(static_cast<unsigned char>(version.front())));
  CHECK(version.find_first_not_of("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.+~") ==
        std::string::npos);
  CHECK(version.starts_with(KILN_RELEASE));
  for (auto program : {"kiln", "kiln-service", "kiln-board-emu"}) {
    auto r = test::run_process(test::bin_path(program), {"--version"});
    CHECK_MESSAGE(r.exit_code == 0, program);
    CHECK_MESSAGE(r.out == version + "\n", program << " printed " << r.out);
  }
}

TEST_CASE("version: GET /v1/version answers the build's version without a token") {
  test::TempDir dir;
  auto data = dir.path() / "svc";
  REQUIRE(test::run_process(test::bin_path("kiln-service"), {"init", "--dir", data.string()}).exit_code == 0);
  test::ServiceProcess service(data);
  transport::HttpConfig config;
  config.base_url = service.url();
  config.ca_file = (data / "ca.pem").string();
  transport::HttpClient http(config);
  auto reply = http.send({.method = "GET", .path = "/v1/version"});
  CHECK(reply.status == 200);
  auto body = nlohmann::json::parse(reply.body);
  CHECK(body["version"] == KILN_VERSION);
  CHECK(body["service"] == "kiln-service");
}
