// The HTTPS client against a real kiln-service: retries only what is safe to repeat, reuses connections.
#include <doctest/doctest.h>

#include "core/error.hpp"
#include "tests/support/fault_proxy.hpp"
#include "tests/support/process.hpp"
#include "tests/support/service_process.hpp"
#include "tests/support/temp_dir.hpp"
#include "transport/http_client.hpp"

using namespace kiln;
using namespace kiln::transport;

namespace {

struct Service {
  test::TempDir dir;
  std::unique_ptr<test::ServiceProcess> process;
  std::string token;
  Service() {
    auto init = test::run_process(test::bin_path("kiln-service"), {"init", "--dir", dir.file("svc")});
    REQUIRE(init.exit_code == 0);
    process = std::make_unique<test::ServiceProcess>(dir.path() / "svc");
    token = test::run_process("/bin/cat", {dir.file("svc/admin.token")}).out;
    token.pop_back();
  }
  HttpConfig config(int port) const {
    HttpConfig c;
    c.base_url = "https://127.0.0.1:" + std::to_string(port);
    c.bearer_token = token;
    c.ca_file = dir.file("svc/ca.pem");
    return c;
  }
};

ExitCode code_of(HttpClient& client, const HttpRequest& request) {
  try {
    client.call(request);
  } catch (const Error& e) {
    return e.code();
  }
  return ExitCode::ok;
}

}  // namespace

TEST_CASE("http client: one connection serves many requests (keep-alive)") {
  Service s;
  test::FaultProxy proxy(s.process->port());
  HttpClient client(s.config(proxy.port()));
  for (int i = 0; i < 20; ++i) CHECK(client.call({.method = "GET", .path = "/v1/whoami"}).status == 200);
  CHECK(proxy.connections() == 1);
}

TEST_CASE("http client: retries GETs and keyed POSTs, never an unkeyed POST") {
  Service s;
  test::FaultProxy proxy(s.process->port());
  auto config = s.config(proxy.port());
  config.max_attempts = 3;
  HttpClient client(config);
  proxy.block();

  CHECK(code_of(client, {.method = "GET", .path = "/v1/whoami"}) == ExitCode::service);
  CHECK(proxy.connections() == 3);
  CHECK(code_of(client, {.method = "POST", .path = "/v1/products", .body = R"({"name":"A"})"}) == ExitCode::service);
  CHECK(proxy.connections() == 4);
  CHECK(code_of(client, {.method = "POST", .path = "/v1/products", .body = R"({"name":"A"})", .idempotency_key = "k1"}) ==
        ExitCode::service);
  CHECK(proxy.connections() == 7);

  proxy.allow();
  CHECK(client.call({.method = "POST", .path = "/v1/products", .body = R"({"name":"A"})", .idempotency_key = "k1"}).status == 201);
}

TEST_CASE("http client: HTTP errors become exit codes with the service's message") {
  Service s;
  HttpClient client(s.config(s.process->port()));
  try {
    client.call({.method = "GET", .path = "/v1/products/nope"});
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::not_found);
    CHECK(std::string(e.what()) == "product nope not found");
  }
  CHECK(code_of(client, {.method = "POST", .path = "/v1/products", .body = "{"}) == ExitCode::failure);
  auto anonymous = s.config(s.process->port());
  anonymous.bearer_token = "kiln_nope";
  HttpClient stranger(anonymous);
  CHECK(code_of(stranger, {.method = "GET", .path = "/v1/whoami"}) == ExitCode::authentication);
}
