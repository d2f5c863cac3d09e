// Tests for service/connection_guard on an in-process TLS server (cpp-httplib, as kiln-service listens): a
// connection that never finishes its handshake is cut at the handshake deadline, a second connection from an
// address at its cap is refused at once, and a well-behaved request is served.
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <thread>

#include <httplib.h>

#include "service/connection_guard.hpp"
#include "service/tls_material.hpp"
#include "tests/support/loopback.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;
using Clock = std::chrono::steady_clock;

namespace {

// A TLS server on 127.0.0.1 (any port) with the guard attached; GET /hi answers "hi".
struct GuardedServer {
  test::TempDir dir;
  std::unique_ptr<service::ConnectionGuard> guard;  // outlives the server's connections
  std::unique_ptr<httplib::SSLServer> server;
  std::thread thread;
  int port = 0;

  explicit GuardedServer(service::ConnectionLimits limits) {
    service::create_tls_material(dir.path());
    guard = std::make_unique<service::ConnectionGuard>(limits, "test");
    server = std::make_unique<httplib::SSLServer>(dir.file("server.pem").c_str(), dir.file("server.key").c_str());
    REQUIRE(server->is_valid());
    guard->attach(*server);
    server->Get("/hi", [](const httplib::Request&, httplib::Response& res) { res.set_content("hi", "text/plain"); });
    port = server->bind_to_any_port("127.0.0.1");
    REQUIRE(port > 0);
    thread = std::thread([this] { server->listen_after_bind(); });
    // bind_to_any_port already listens: connections queue until the accept loop runs.
  }
  ~GuardedServer() {
    server->stop();
    thread.join();
  }
  GuardedServer(const GuardedServer&) = delete;
  GuardedServer& operator=(const GuardedServer&) = delete;
};

// Seconds until the server closes `fd` (recv reads end of file or an error), or -1 when it is still open when the
// socket's read timeout passes.
double seconds_until_closed(int fd) {
  auto started = Clock::now();
  char byte = 0;
  ssize_t n = ::recv(fd, &byte, 1, 0);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return -1;
  return std::chrono::duration<double>(Clock::now() - started).count();
}

}  // namespace

TEST_CASE("connection guard: a connection that never finishes its TLS handshake is cut at the deadline") {
  service::ConnectionLimits limits;
  limits.handshake = std::chrono::milliseconds(300);
  GuardedServer s(limits);
  int fd = test::connect_loopback(s.port, 5);
  REQUIRE(fd >= 0);
  auto waited = seconds_until_closed(fd);
  ::close(fd);
  CHECK(waited >= 0);   // closed by the server, well before the client's 5 s
  CHECK(waited < 3.0);
}

TEST_CASE("connection guard: an address at its cap is refused at once; the connection it holds stays") {
  service::ConnectionLimits limits;
  limits.handshake = std::chrono::seconds(20);
  limits.per_address = 1;
  GuardedServer s(limits);
  int first = test::connect_loopback(s.port, 1);
  REQUIRE(first >= 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // its handshake has started: it counts
  int second = test::connect_loopback(s.port, 5);
  REQUIRE(second >= 0);
  auto refused = seconds_until_closed(second);
  CHECK(refused >= 0);
  CHECK(refused < 3.0);
  CHECK(seconds_until_closed(first) == -1);  // still open after its 1 s read timeout
  ::close(second);
  ::close(first);
}

TEST_CASE("connection guard: a request within the deadlines is served") {
  service::ConnectionLimits limits;
  limits.handshake = std::chrono::seconds(5);
  limits.headers = std::chrono::seconds(5);
  GuardedServer s(limits);
  httplib::SSLClient client("127.0.0.1", s.port);
  client.enable_server_certificate_verification(false);
  auto response = client.Get("/hi");
  REQUIRE(response);
  CHECK(response->status == 200);
  CHECK(response->body == "hi");
}
