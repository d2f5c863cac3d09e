// TLS session resumption on kiln-service's agent listener (issue 13 item 6): devices check in on fresh
// connections and resume their session. A device certified through an intermediate CA is the same device on a
// resumed connection (the chain travels in the ticket): its check-in is answered 200 on every connection, full
// or resumed (the service verifies the chain again on a resumed connection). Instances on copies of one directory
// share the ticket secret, and a restart keeps it: the ticket resumes on each. An instance with another secret
// answers the ticket with a full handshake, and lets the device in.
#include <doctest/doctest.h>
#include <csignal>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "signing/openssl_ptr.hpp"
#include "tests/support/loopback.hpp"
#include "tests/support/process.hpp"
#include "tests/support/service_process.hpp"
#include "tests/support/service_setup.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_certificates.hpp"

namespace fs = std::filesystem;
using kiln::test::spit;

namespace {

using kiln::ossl::Ptr;

Ptr<X509> x509_of(const std::string& pem) {
  Ptr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return Ptr<X509>(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

// A device's TLS client: its certificate, the intermediate CA that issued it, its key; TLS 1.3 only.
struct DeviceClient {
  Ptr<SSL_CTX> ctx{SSL_CTX_new(TLS_client_method())};

  DeviceClient(const std::string& service_ca_file, const std::string& leaf_pem, const std::string& intermediate_pem,
               const kiln::test::TestKey& key) {
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
    REQUIRE(SSL_CTX_load_verify_locations(ctx.get(), service_ca_file.c_str(), nullptr) == 1);
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    auto leaf = x509_of(leaf_pem);
    REQUIRE(SSL_CTX_use_certificate(ctx.get(), leaf.get()) == 1);
    REQUIRE(SSL_CTX_add1_chain_cert(ctx.get(), x509_of(intermediate_pem).get()) == 1);
    REQUIRE(SSL_CTX_use_PrivateKey(ctx.get(), key.key.get()) == 1);
  }

  // Sends `copies` more copies of `pem` in its chain (a stranger's oversized chain).
  void pad_chain(const std::string& pem, int copies) {
    for (int i = 0; i < copies; ++i) REQUIRE(SSL_CTX_add1_chain_cert(ctx.get(), x509_of(pem).get()) == 1);
  }

  struct Exchange {
    bool handshake = false;
    bool reused = false;
    int status = 0;
    std::string response;
    Ptr<SSL_SESSION> session;
  };

  // One check-in on a new connection, offering `session` for resumption; the session to offer next time.
  Exchange check_in(int port, SSL_SESSION* session = nullptr) {
    Exchange out;
    int fd = kiln::test::connect_loopback(port);
    REQUIRE(fd >= 0);
    Ptr<SSL> ssl(SSL_new(ctx.get()));
    SSL_set_fd(ssl.get(), fd);
    if (session) SSL_set_session(ssl.get(), session);
    out.handshake = SSL_connect(ssl.get()) == 1;
    if (out.handshake) {
      out.reused = SSL_session_reused(ssl.get()) == 1;
      std::string request =
          "POST /v1/agent/check-in HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
          "Content-Length: 2\r\nConnection: close\r\n\r\n{}";
      SSL_write(ssl.get(), request.data(), static_cast<int>(request.size()));
      char buf[4096];
      int n = 0;
      while ((n = SSL_read(ssl.get(), buf, sizeof buf)) > 0) out.response.append(buf, static_cast<std::size_t>(n));
      if (out.response.rfind("HTTP/1.1 ", 0) == 0) out.status = std::stoi(out.response.substr(9, 3));
      // TLS 1.3 tickets arrive after the handshake: the session is complete once the answer was read. A
      // connection freed without its close_notify would make OpenSSL drop the session as not resumable.
      out.session.reset(SSL_get1_session(ssl.get()));
      SSL_shutdown(ssl.get());
    }
    ERR_clear_error();
    ::close(fd);
    return out;
  }
};

// The ticket a session holds (what the client offers to resume it).
std::string ticket_of(SSL_SESSION* session) {
  const unsigned char* tick = nullptr;
  std::size_t length = 0;
  SSL_SESSION_get0_ticket(session, &tick, &length);
  return std::string(reinterpret_cast<const char*>(tick), length);
}

// A service directory `a` whose tenant trusts a factory root CA, with unit-1 imported: its certificate comes from an
// intermediate CA under the root.
struct Fleet {
  kiln::test::TempDir dir;
  fs::path a = dir.path() / "a";
  kiln::test::TestCa root{"Acme Root CA"};
  kiln::test::TestKey line_key, device_key;
  std::string line_pem, device_pem;
  Ptr<X509> line_owner;

  Fleet() {
    auto init = kiln::test::run_process(kiln::test::bin_path("kiln-service"), {"init", "--dir", a.string()});
    REQUIRE_MESSAGE(init.exit_code == 0, init.err);
    X509* line_cert = nullptr;
    line_pem = kiln::test::issue_certificate(line_key, "Acme Line 3 CA", root.cert, root.key, true, &line_cert);
    line_owner.reset(line_cert);
    device_pem = kiln::test::issue_certificate(device_key, "unit-1", line_cert, line_key, false);
    kiln::test::ServiceProcess first(a);
    auto env = admin(first);
    spit(dir.file("root.pem"), root.pem);
    spit(dir.file("root.key"), root.key.private_pem(), true);
    auto added = kiln::test::kiln({"device", "ca", "add", dir.file("root.pem"), "--key", dir.file("root.key")}, env);
    REQUIRE_MESSAGE(added.exit_code == 0, added.err);
    REQUIRE(kiln::test::kiln({"product", "create", "Thermo"}, env).exit_code == 0);
    nlohmann::json unit = {{"uid", "unit-1"}, {"product", "Thermo"}, {"state", "device-complete"},
                           {"version", "1.0.0"}, {"public_key", device_key.public_pem()}};
    spit(dir.file("bundle.jsonl"), kiln::test::signed_bundle(unit.dump() + "\n", root.key));
    auto imported = kiln::test::kiln({"device", "import", dir.file("bundle.jsonl")}, env);
    REQUIRE_MESSAGE(imported.exit_code == 0, imported.err);
  }

  // The environment of `kiln` as the tenant's admin of `instance` (any instance on a copy of `a`).
  kiln::test::ProcessOptions admin(const kiln::test::ServiceProcess& instance) {
    kiln::test::ProcessOptions env;
    env.env["XDG_CONFIG_HOME"] = dir.file("xdg");
    env.env["KILN_SERVICE"] = instance.url();
    env.env["KILN_CA_FILE"] = (a / "ca.pem").string();
    env.env["KILN_TOKEN"] = kiln::test::ServiceSetup::token_of((a / "admin.token").string());
    return env;
  }

  DeviceClient device() { return DeviceClient((a / "ca.pem").string(), device_pem, line_pem, device_key); }

  // The service remembers a device it verified until a write made with a token: one before a resumed check-in
  // makes the service verify the chain the resumed session carries, not a remembered answer.
  void forget_verified_devices(const kiln::test::ServiceProcess& instance) {
    auto created = kiln::test::kiln({"product", "create", "Other-" + std::to_string(++products_)}, admin(instance));
    REQUIRE_MESSAGE(created.exit_code == 0, created.err);
  }

 private:
  int products_ = 0;
};

}  // namespace

TEST_CASE("session tickets: a device resumes its session and keeps its intermediate-CA chain") {
  Fleet fleet;
  auto& dir = fleet.dir;
  const fs::path& a = fleet.a;
  fs::path b = dir.path() / "b";
  // A second instance on a copy of the directory (its store too, here).
  fs::copy(a, b, fs::copy_options::recursive);
  kiln::test::ServiceProcess instance_a(a, 0, true), instance_b(b, 0, true);
  auto device = fleet.device();
  auto forget_verified_devices = [&] { fleet.forget_verified_devices(instance_a); };

  auto full = device.check_in(instance_a.agent_port());
  REQUIRE(full.handshake);
  CHECK_FALSE(full.reused);
  INFO(full.response);
  REQUIRE(full.status == 200);
  REQUIRE(full.session);
  CHECK(SSL_SESSION_is_resumable(full.session.get()) == 1);

  // Resumed, twice, each time after the service forgot the devices it verified: the chain came along. A young
  // ticket is not replaced (issuing one costs the service as much as opening one): the device keeps offering
  // the ticket of its full handshake, and it keeps working.
  forget_verified_devices();
  auto resumed = device.check_in(instance_a.agent_port(), full.session.get());
  REQUIRE(resumed.handshake);
  CHECK(resumed.reused);
  INFO(resumed.response);
  CHECK(resumed.status == 200);
  REQUIRE(resumed.session);
  forget_verified_devices();
  CHECK(ticket_of(resumed.session.get()) == ticket_of(full.session.get()));
  auto again = device.check_in(instance_a.agent_port(), resumed.session.get());
  CHECK(again.reused);
  CHECK(again.status == 200);

  // Another instance on a copy of the directory shares its ticket secret (written by init): the ticket resumes
  // there too, as it does behind a load balancer.
  auto other = device.check_in(instance_b.agent_port(), full.session.get());
  REQUIRE(other.handshake);
  CHECK(other.reused);
  CHECK(other.status == 200);

  // A restart keeps the tickets working: the fleet does not come back with full handshakes all at once.
  instance_a.stop();
  kiln::test::ServiceProcess restarted(a, 0, true);
  auto after_restart = device.check_in(restarted.agent_port(), full.session.get());
  REQUIRE(after_restart.handshake);
  CHECK(after_restart.reused);
  CHECK(after_restart.status == 200);

  // An instance with another secret cannot open the ticket: a full handshake, and the device is let in.
  fs::path c = dir.path() / "c";
  fs::copy(b, c, fs::copy_options::recursive);
  fs::remove(c / "ticket-key");
  kiln::test::ServiceProcess instance_c(c, 0, true);
  CHECK((fs::status(c / "ticket-key").permissions() & (fs::perms::group_all | fs::perms::others_all)) == fs::perms::none);
  auto stranger = device.check_in(instance_c.agent_port(), full.session.get());
  REQUIRE(stranger.handshake);
  CHECK_FALSE(stranger.reused);
  CHECK(stranger.status == 200);
}

// `--session-cache N`: the agent listener issues stateful tickets (a 32-byte session ID, the session kept in the
// process) and resumes them without opening a sealed ticket. A stateless ticket (from before, or from another
// instance) still resumes, and is swapped for a stateful one at once; each stateful ticket resumes once (the
// resumption hands out the next); the chain comes along; a restart or an instance without the session answers
// such a ticket with a full handshake, and lets the device in.
TEST_CASE("session tickets: --session-cache resumes stateful tickets once each, and still takes stateless ones") {
  Fleet fleet;
  fs::path b = fleet.dir.path() / "b";
  fs::copy(fleet.a, b, fs::copy_options::recursive);
  auto device = fleet.device();
  std::vector<std::string> cache_args = {"--session-cache", "100"};
  auto stateless = [&] {
    kiln::test::ServiceProcess plain(fleet.a, 0, true);
    auto full = device.check_in(plain.agent_port());
    REQUIRE(full.status == 200);
    REQUIRE(full.session);
    return std::move(full.session);
  }();
  CHECK(ticket_of(stateless.get()).size() > SSL_MAX_SSL_SESSION_ID_LENGTH);

  auto cached = std::make_unique<kiln::test::ServiceProcess>(b, 0, true, cache_args);
  auto swapped = device.check_in(cached->agent_port(), stateless.get());
  REQUIRE(swapped.handshake);
  CHECK(swapped.reused);
  CHECK(swapped.status == 200);
  REQUIRE(swapped.session);
  CHECK(ticket_of(swapped.session.get()).size() == SSL_MAX_SSL_SESSION_ID_LENGTH);

  fleet.forget_verified_devices(*cached);
  auto resumed = device.check_in(cached->agent_port(), swapped.session.get());
  REQUIRE(resumed.handshake);
  CHECK(resumed.reused);
  INFO(resumed.response);
  CHECK(resumed.status == 200);  // the intermediate CA came along in the kept session
  REQUIRE(resumed.session);
  CHECK(ticket_of(resumed.session.get()).size() == SSL_MAX_SSL_SESSION_ID_LENGTH);
  CHECK(ticket_of(resumed.session.get()) != ticket_of(swapped.session.get()));

  // Used once: the same ticket again is a full handshake (and a device let in).
  auto replayed = device.check_in(cached->agent_port(), swapped.session.get());
  REQUIRE(replayed.handshake);
  CHECK_FALSE(replayed.reused);
  CHECK(replayed.status == 200);
  auto next = device.check_in(cached->agent_port(), resumed.session.get());
  CHECK(next.reused);
  CHECK(next.status == 200);
  REQUIRE(next.session);

  // The session lives in the process: an instance without it, or a restart, means a full handshake.
  {
    kiln::test::ServiceProcess plain(fleet.a, 0, true);
    auto elsewhere = device.check_in(plain.agent_port(), next.session.get());
    REQUIRE(elsewhere.handshake);
    CHECK_FALSE(elsewhere.reused);
    CHECK(elsewhere.status == 200);
  }
  cached.reset();
  kiln::test::ServiceProcess restarted(b, 0, true, cache_args);
  auto after_restart = device.check_in(restarted.agent_port(), next.session.get());
  REQUIRE(after_restart.handshake);
  CHECK_FALSE(after_restart.reused);
  CHECK(after_restart.status == 200);
  // The stateless ticket still resumes after the restart (the ticket secret is on disk).
  auto stateless_again = device.check_in(restarted.agent_port(), stateless.get());
  CHECK(stateless_again.reused);
  CHECK(stateless_again.status == 200);
}

// A full cache does not push out sessions devices are about to use: new tickets are stateless until a
// resumption takes a session out, and a young stateless ticket resumes without a new one.
TEST_CASE("session tickets: a full --session-cache issues stateless tickets") {
  Fleet fleet;
  auto device = fleet.device();
  kiln::test::ServiceProcess cached(fleet.a, 0, true, {"--session-cache", "1"});
  auto first = device.check_in(cached.agent_port());
  REQUIRE(first.status == 200);
  REQUIRE(first.session);
  CHECK(ticket_of(first.session.get()).size() == SSL_MAX_SSL_SESSION_ID_LENGTH);
  auto second = device.check_in(cached.agent_port());  // another full handshake: the cache holds `first`'s
  REQUIRE(second.status == 200);
  REQUIRE(second.session);
  CHECK(ticket_of(second.session.get()).size() > SSL_MAX_SSL_SESSION_ID_LENGTH);
  auto resumed = device.check_in(cached.agent_port(), first.session.get());
  CHECK(resumed.reused);
  CHECK(resumed.status == 200);
  REQUIRE(resumed.session);
  CHECK(ticket_of(resumed.session.get()).size() == SSL_MAX_SSL_SESSION_ID_LENGTH);
  auto stateless = device.check_in(cached.agent_port(), second.session.get());
  CHECK(stateless.reused);
  CHECK(stateless.status == 200);
  // The cache is full again (the resumption put its next session in): no room for a stateful ticket, so the
  // young stateless one is not renewed either (another stateless ticket would cost what the age rule saves).
  REQUIRE(stateless.session);
  CHECK(ticket_of(stateless.session.get()) == ticket_of(second.session.get()));
}

TEST_CASE("session tickets: the agent listener refuses a client certificate chain over 16 KiB") {
  Fleet fleet;
  kiln::test::ServiceProcess cached(fleet.a, 0, true, {"--session-cache", "10"});
  auto device = fleet.device();
  CHECK(device.check_in(cached.agent_port()).status == 200);
  std::signal(SIGPIPE, SIG_IGN);  // the service closes the connection while the long chain is still being sent
  // The same device, its intermediate sent 100 more times (~40 KiB): refused in the handshake, nothing kept.
  auto padded = fleet.device();
  padded.pad_chain(fleet.line_pem, 100);
  auto refused = padded.check_in(cached.agent_port());
  // (A TLS 1.3 client may finish its side of the handshake before the service reads its certificates: the
  // refusal shows as a connection closed without an answer.)
  CHECK(refused.status == 0);
  CHECK(refused.response.empty());
  // Under the limit (8 more copies, ~3 KiB) it is let in as before.
  auto longer = fleet.device();
  longer.pad_chain(fleet.line_pem, 8);
  CHECK(longer.check_in(cached.agent_port()).status == 200);
}
