// kiln-service as a system service, with the real binary on loopback: its config file is checked at start,
// SIGTERM lets requests in flight finish, SIGHUP swaps the TLS certificate for new connections only, and
// systemd hears READY=1 / RELOADING=1 / STOPPING=1 on $NOTIFY_SOCKET.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tests/support/loopback.hpp"
#include "tests/support/process.hpp"
#include "tests/support/scoped_env.hpp"
#include "tests/support/service_process.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;
namespace fs = std::filesystem;

namespace {

std::string hex(const unsigned char* data, unsigned int size) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < size; ++i) {
    out += digits[data[i] >> 4];
    out += digits[data[i] & 15];
  }
  return out;
}

std::string fingerprint(X509* certificate) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  X509_digest(certificate, EVP_sha256(), digest, &size);
  return hex(digest, size);
}

std::string file_fingerprint(const fs::path& pem) {
  FILE* f = std::fopen(pem.c_str(), "r");
  REQUIRE(f);
  X509* certificate = PEM_read_X509(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  REQUIRE(certificate);
  auto out = fingerprint(certificate);
  X509_free(certificate);
  return out;
}

// One TLS connection to 127.0.0.1 that speaks HTTP/1.1 by hand, so a test can stop halfway through a request.
class Connection {
 public:
  explicit Connection(int port) {
    signal(SIGPIPE, SIG_IGN);  // a write to a service that went away fails the check instead of the test run
    fd_ = test::connect_loopback(port);
    connected_ = fd_ >= 0;
    if (!connected_) return;
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    connected_ = SSL_connect(ssl_) == 1;
  }
  ~Connection() {
    if (ssl_) SSL_free(ssl_);
    if (ctx_) SSL_CTX_free(ctx_);
    if (fd_ >= 0) close(fd_);
  }
  bool connected() const { return connected_; }

  std::string peer_fingerprint() const {
    X509* peer = SSL_get1_peer_certificate(ssl_);
    REQUIRE(peer);
    auto out = fingerprint(peer);
    X509_free(peer);
    return out;
  }

  bool send(const std::string& bytes) {
    return SSL_write(ssl_, bytes.data(), static_cast<int>(bytes.size())) == static_cast<int>(bytes.size());
  }

  // The status of one response, its body read whole (Content-Length); 0 when the connection ends first.
  int read_response(std::string* body = nullptr) {
    std::string data;
    char buffer[4096];
    std::size_t header_end = std::string::npos, length = 0;
    while (true) {
      if (header_end == std::string::npos && (header_end = data.find("\r\n\r\n")) != std::string::npos) {
        auto at = data.find("Content-Length: ");
        if (at != std::string::npos && at < header_end) length = std::stoul(data.substr(at + 16));
      }
      if (header_end != std::string::npos && data.size() >= header_end + 4 + length) break;
      int n = SSL_read(ssl_, buffer, sizeof buffer);
      if (n <= 0) return 0;
      data.append(buffer, static_cast<std::size_t>(n));
    }
    if (body) *body = data.substr(header_end + 4, length);
    return data.starts_with("HTTP/1.1 ") ? std::stoi(data.substr(9, 3)) : 0;
  }

 private:
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  bool connected_ = false;
};

std::string version_request() { return "GET /v1/version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"; }

fs::path init_service(const test::TempDir& dir, const std::string& name = "svc") {
  auto data = dir.path() / name;
  auto r = test::run_process(test::bin_path("kiln-service"), {"init", "--dir", data.string()});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  return data;
}

bool alive(pid_t pid) { return waitpid(pid, nullptr, WNOHANG) == 0; }

// systemd's side of sd_notify: a datagram socket named by NOTIFY_SOCKET for the processes started meanwhile.
struct NotifySocket {
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  test::ScopedEnv notify_socket;
  explicit NotifySocket(const std::string& path) : notify_socket("NOTIFY_SOCKET", path.c_str()) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    timeval timeout{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  }
  ~NotifySocket() { close(fd); }
  std::string next() const {
    char buffer[256];
    auto n = recv(fd, buffer, sizeof buffer, 0);
    return n <= 0 ? "(nothing within 10 s)" : std::string(buffer, static_cast<std::size_t>(n));
  }
};

}  // namespace

TEST_CASE("service: a config file with an unknown key or a wrong type stops run at start (exit 2, file:line:key)") {
  test::TempDir dir;
  auto data = init_service(dir);
  auto config = dir.file("config.toml");
  auto run = [&](const std::string& text) {
    std::ofstream(config) << text;
    return test::run_process(test::bin_path("kiln-service"), {"run", "--config", config});
  };
  auto unknown = run("dir = \"" + data.string() + "\"\nlisten = \"127.0.0.1:0\"\nlisen = \"127.0.0.1:1\"\n");
  CHECK(unknown.exit_code == 2);
  CHECK_MESSAGE(unknown.err.find(config + ":3: unknown key 'lisen'") != std::string::npos, unknown.err);
  auto wrong_type = run("dir = \"" + data.string() + "\"\n\nthreads = \"eight\"\n");
  CHECK(wrong_type.exit_code == 2);
  CHECK_MESSAGE(wrong_type.err.find(config + ":3: 'threads' must be an integer, not a string") != std::string::npos,
                wrong_type.err);
  auto out_of_range = run("dir = \"" + data.string() + "\"\nthreads = 0\n");
  CHECK(out_of_range.exit_code == 2);
  CHECK_MESSAGE(out_of_range.err.find(config + ":2: 'threads'") != std::string::npos, out_of_range.err);
  auto no_dir = run("listen = \"127.0.0.1:0\"\n");
  CHECK(no_dir.exit_code == 2);
  CHECK(no_dir.err.find("no data directory") != std::string::npos);
}

// The session cache serves the agent listener only: asked for without one, run stops at start instead of ignoring it.
TEST_CASE("service: --session-cache without --agent-listen stops run at start (exit 2), as a flag or in the config file") {
  test::TempDir dir;
  auto data = init_service(dir);
  test::ProcessOptions briefly;
  briefly.timeout_seconds = 10;  // a run that ignored the setting would serve until killed
  auto flag = test::run_process(test::bin_path("kiln-service"),
                                {"run", "--dir", data.string(), "--listen", "127.0.0.1:0", "--session-cache", "100"},
                                briefly);
  CHECK(flag.exit_code == 2);
  CHECK_MESSAGE(flag.err.find("--session-cache keeps the agent listener's sessions, and there is no agent listener") !=
                    std::string::npos,
                flag.err);
  CHECK_MESSAGE(flag.err.find("hint: give --agent-listen HOST:PORT") != std::string::npos, flag.err);
  auto config = dir.file("config.toml");
  std::ofstream(config) << "dir = \"" << data.string() << "\"\nlisten = \"127.0.0.1:0\"\nsession-cache = 100\n";
  auto file = test::run_process(test::bin_path("kiln-service"), {"run", "--config", config}, briefly);
  CHECK(file.exit_code == 2);
  CHECK_MESSAGE(file.err.find("there is no agent listener") != std::string::npos, file.err);
}

TEST_CASE("service: the config file supplies run's settings, and flags win over it") {
  test::TempDir dir;
  auto data = init_service(dir);
  auto config = dir.file("config.toml");
  // listen here is overridden by ServiceProcess's --listen 127.0.0.1:0; dir comes from the file.
  std::ofstream(config) << "dir = \"/nonexistent\"\nlisten = \"127.0.0.1:1\"\nthreads = 2\nbody-timeout = 30.5\n";
  test::ServiceProcess service(data, 0, false, {"--config", config});
  Connection c(service.port());
  REQUIRE(c.connected());
  REQUIRE(c.send(version_request()));
  CHECK(c.read_response() == 200);
  // init reads 'dir' from the file too, and --if-missing makes it a no-op the second time (ExecStartPre).
  std::ofstream(config) << "dir = \"" << (dir.path() / "from-config").string() << "\"\n";
  auto first = test::run_process(test::bin_path("kiln-service"), {"init", "--config", config, "--if-missing"});
  CHECK_MESSAGE(first.exit_code == 0, first.err);
  CHECK(fs::exists(dir.path() / "from-config" / "kiln.db"));
  auto again = test::run_process(test::bin_path("kiln-service"), {"init", "--config", config, "--if-missing"});
  CHECK(again.exit_code == 0);
  CHECK(test::run_process(test::bin_path("kiln-service"), {"init", "--config", config}).exit_code == 7);
}

TEST_CASE("service: SIGTERM lets a slow request in flight finish, then the service exits 0") {
  test::TempDir dir;
  auto data = init_service(dir);
  std::string token = test::slurp(data / "admin.token");
  token.erase(token.find_last_not_of("\r\n") + 1);
  NotifySocket systemd(dir.file("notify"));
  test::ServiceProcess service(data);
  CHECK(systemd.next() == "READY=1");
  Connection slow(service.port());
  REQUIRE(slow.connected());
  std::string body = R"({"name": "Drained", "description": "sent across SIGTERM"})";
  REQUIRE(slow.send("POST /v1/products HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token +
                    "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                    "\r\n\r\n" + body.substr(0, 10)));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  REQUIRE(kill(service.pid(), SIGTERM) == 0);
  CHECK(systemd.next() == "STOPPING=1");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CHECK_MESSAGE(alive(service.pid()), "the service exited with a request in flight");
  // No new connections once stopping.
  CHECK_FALSE(Connection(service.port()).connected());
  REQUIRE(slow.send(body.substr(10)));
  std::string reply;
  CHECK(slow.read_response(&reply) == 201);
  CHECK(reply.find("Drained") != std::string::npos);
  CHECK(service.stop() == 0);
}

TEST_CASE("service: SIGHUP reloads the TLS certificate for new connections; a kept-alive one keeps working") {
  test::TempDir dir;
  auto data = init_service(dir);
  auto other = init_service(dir, "other");  // a second installation: another CA and server certificate
  std::string before = file_fingerprint(data / "server.pem"), after = file_fingerprint(other / "server.pem");
  REQUIRE(before != after);
  NotifySocket systemd(dir.file("notify"));
  test::ServiceProcess service(data);
  CHECK(systemd.next() == "READY=1");
  Connection kept(service.port());
  REQUIRE(kept.connected());
  CHECK(kept.peer_fingerprint() == before);
  REQUIRE(kept.send(version_request()));
  CHECK(kept.read_response() == 200);

  // Renewal as certbot or an operator does it: new files renamed into place, then SIGHUP.
  fs::copy_file(other / "server.pem", data / "server.pem.new");
  fs::copy_file(other / "server.key", data / "server.key.new");
  fs::rename(data / "server.pem.new", data / "server.pem");
  fs::rename(data / "server.key.new", data / "server.key");
  REQUIRE(kill(service.pid(), SIGHUP) == 0);
  CHECK(systemd.next() == "RELOADING=1");
  CHECK(systemd.next() == "READY=1");
  Connection fresh(service.port());
  REQUIRE(fresh.connected());
  CHECK(fresh.peer_fingerprint() == after);
  REQUIRE(fresh.send(version_request()));
  CHECK(fresh.read_response() == 200);
  // The connection made before the reload still answers, on its old certificate.
  REQUIRE(kept.send(version_request()));
  CHECK(kept.read_response() == 200);
  CHECK(kept.peer_fingerprint() == before);

  // A broken renewal (key of another certificate) is refused: the service keeps the pair it has.
  fs::copy_file(data / "ca.key", data / "server.key", fs::copy_options::overwrite_existing);
  REQUIRE(kill(service.pid(), SIGHUP) == 0);
  CHECK(systemd.next() == "RELOADING=1");
  CHECK(systemd.next() == "READY=1");
  Connection after_bad(service.port());
  REQUIRE(after_bad.connected());
  CHECK(after_bad.peer_fingerprint() == after);
  CHECK(alive(service.pid()));
  CHECK(service.stop() == 0);
  CHECK(systemd.next() == "STOPPING=1");
}
