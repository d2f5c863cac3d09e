// Staged rollouts end to end: the real kiln-service, the real kiln, and device agents over real mutual TLS.
#include <doctest/doctest.h>

#include <signal.h>

#include <chrono>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "core/files.hpp"
#include "core/time.hpp"
#include "signing/signer.hpp"
#include "tests/support/process.hpp"
#include "tests/support/service_process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_certificates.hpp"
#include "transport/http_client.hpp"

using namespace kiln;
using Json = nlohmann::json;

namespace {

std::string slurp(const std::filesystem::path& path) {
  return read_text_file(path);
}

void spit(const std::filesystem::path& path, const std::string& data) {
  AtomicFile out(path, 0600);
  out.write(data);
  out.commit();
}

std::string sha256_hex(const std::string& data) {
  return to_hex(digest(HashAlg::sha256, as_bytes(data)));
}

// docs/openapi.yaml (Deployment): first 8 bytes of SHA-256("DEP:UID"), big-endian, modulo 100.
int bucket(const std::string& deployment, const std::string& device) {
  std::string key = deployment;
  key.append(":").append(device);
  Bytes h = digest(HashAlg::sha256, as_bytes(key));
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | h[static_cast<std::size_t>(i)];
  return static_cast<int>(v % 100);
}

// A device as its update agent talks to the service: its certificate and key, over mutual TLS.
struct Agent {
  std::string uid;
  std::string cert_file, key_file;
  std::unique_ptr<transport::HttpClient> http;

  void connect(const std::string& url, const std::string& ca_file) {
    transport::HttpConfig config;
    config.base_url = url;
    config.ca_file = ca_file;
    config.client_cert = cert_file;
    config.client_key = key_file;
    config.max_attempts = 1;
    http = std::make_unique<transport::HttpClient>(config);
  }
  // Each exchange closes its connection: 20 agents keeping connections alive would each hold one of the
  // service's worker threads for its keep-alive timeout.
  transport::HttpResponse post(const std::string& path, const std::string& body) {
    return http->send({.method = "POST", .path = path, .body = body, .headers = {"Connection: close"}});
  }
  Json check_in(const Json& body = Json::object()) {
    auto r = post("/v1/agent/check-in", body.dump());
    INFO(uid << " check-in: " << r.status << " " << r.body);
    REQUIRE(r.status == 200);
    return Json::parse(r.body);
  }
  Json offer(const Json& body = Json::object()) { return check_in(body)["deployment"]; }
  long report(const std::string& deployment, const std::string& status, const std::string& version = {}) {
    Json body = {{"deployment", deployment}, {"status", status}, {"detail", "reported by the test"}};
    if (!version.empty()) body["version"] = version;
    return post("/v1/agent/status", body.dump()).status;
  }
  transport::HttpResponse get(const std::string& path) {
    return http->send({.method = "GET", .path = path, .headers = {"Connection: close"}});
  }
};

struct Fleet {
  test::TempDir dir;
  std::filesystem::path data = dir.path() / "svc";
  std::unique_ptr<test::ServiceProcess> service;
  test::TestCa factory_ca{"Acme Factory CA"};
  std::vector<Agent> agents;  // in "Thermo/Field Test"
  Agent stranger;             // in "Thermo/Production"

  explicit Fleet(int devices) {
    auto init = test::run_process(test::bin_path("kiln-service"), {"init", "--dir", data.string()});
    REQUIRE_MESSAGE(init.exit_code == 0, init.err);
    service = std::make_unique<test::ServiceProcess>(data, 0, true);
    // One release key signs images (MCUboot) and manifests (SUIT); the product trusts it for both.
    REQUIRE(test::kiln({"key", "generate", "-t", "ecdsa-p256", "-o", key_file()}).exit_code == 0);
    json({"product", "create", "Thermo", "--boot-key", key_file(), "--manifest-key", key_file()});
    spit(dir.file("factory-ca.pem"), factory_ca.pem);
    spit(dir.file("factory-ca.key"), factory_ca.key.private_pem());
    json({"device", "ca", "add", dir.file("factory-ca.pem"), "--key", dir.file("factory-ca.key")});
    std::string bundle;
    auto make = [&](const std::string& uid) {
      test::TestKey key;
      Agent agent{uid, dir.file(uid + ".crt"), dir.file(uid + ".key"), nullptr};
      spit(agent.cert_file, factory_ca.issue(key, uid));
      spit(agent.key_file, key.private_pem());
      bundle += Json{{"uid", uid},
                     {"product", "Thermo"},
                     {"state", "device-complete"},
                     {"version", "1.0.0"},
                     {"public_key", key.public_pem()}}
                    .dump() +
                "\n";
      return agent;
    };
    std::vector<std::string> uids;
    for (int i = 0; i < devices; ++i) {
      uids.push_back("unit-" + std::to_string(i));
      agents.push_back(make(uids.back()));
    }
    stranger = make("stranger");
    spit(dir.file("bundle.jsonl"), test::signed_bundle(bundle, factory_ca.key));  // signed as the station exports it
    json({"device", "import", dir.file("bundle.jsonl")});
    std::vector<std::string> assign = {"device", "assign"};
    assign.insert(assign.end(), uids.begin(), uids.end());
    assign.insert(assign.end(), {"--group", "Thermo/Field Test"});
    json(assign);
    json({"device", "assign", "stranger", "--group", "Thermo/Production"});
    connect_agents();
  }

  std::string key_file() const { return dir.file("manifest-key.pem"); }

  void connect_agents() {
    auto url = "https://127.0.0.1:" + std::to_string(service->agent_port());
    for (auto& a : agents) a.connect(url, (data / "ca.pem").string());
    stranger.connect(url, (data / "ca.pem").string());
  }

  void restart() {
    // Agents hang up first, as devices do when the service goes away (a kept-alive connection would hold a worker).
    for (auto& a : agents) a.http.reset();
    stranger.http.reset();
    REQUIRE(service->stop() == 0);
    service = std::make_unique<test::ServiceProcess>(data, 0, true);
    connect_agents();
  }

  test::ProcessOptions env() const {
    test::ProcessOptions o;
    o.env["XDG_CONFIG_HOME"] = dir.file("xdg");
    o.env["KILN_SERVICE"] = service->url();
    o.env["KILN_CA_FILE"] = (data / "ca.pem").string();
    auto token = slurp(data / "admin.token");
    token.pop_back();
    o.env["KILN_TOKEN"] = token;
    return o;
  }
  test::ProcessResult kiln(const std::vector<std::string>& args) const { return test::kiln(args, env()); }
  // kiln with a fresh token of this role.
  test::ProcessResult kiln_as(const std::string& role, const std::vector<std::string>& args) const {
    auto file = dir.file(role + ".token");
    if (!std::filesystem::exists(file))
      REQUIRE(test::run_process(test::bin_path("kiln-service"),
                                {"token", "create", "--dir", data.string(), "--role", role, "--token-file", file})
                  .exit_code == 0);
    auto o = env();
    o.env["KILN_TOKEN"] = slurp(file);
    o.env["KILN_TOKEN"].pop_back();
    return test::kiln(args, o);
  }
  Json json(const std::vector<std::string>& args) const {
    auto with_output = args;
    with_output.insert(with_output.begin(), {"-o", "json"});
    auto r = kiln(with_output);
    INFO("kiln " << args[0] << " " << (args.size() > 1 ? args[1] : "") << ": " << r.err);
    REQUIRE(r.exit_code == 0);
    return Json::parse(r.out);
  }

  // A firmware image (real kiln image sign), its SUIT manifest (real kiln manifest create), both uploaded and
  // linked. Returns {image, manifest}.
  std::pair<std::string, std::string> release(const std::string& name, int sequence) {
    std::string firmware(4096, '\0');
    std::mt19937 rng(static_cast<unsigned>(sequence));
    for (auto& c : firmware) c = static_cast<char>(rng());
    auto raw = dir.file(name + ".raw"), fw = dir.file(name + ".bin"), suit = dir.file(name + ".suit"), key = key_file();
    spit(raw, firmware);
    auto signed_image = test::kiln({"image", "sign", raw, fw, "-k", key, "--version", "1.0." + std::to_string(sequence),
                                    "--header-size", "0x200", "--slot-size", "0x100000", "--pad-header"});
    REQUIRE_MESSAGE(signed_image.exit_code == 0, signed_image.err);
    auto made = test::kiln({"manifest", "create", "--component", fw, "--vendor-domain", "example.com", "--class-name",
                            "thermo", "--sequence", std::to_string(sequence), "--key", key, "-o", suit});
    REQUIRE_MESSAGE(made.exit_code == 0, made.err);
    auto uploaded = json({"image", "upload", fw, "--manifest", suit});
    CHECK(uploaded["sequence"] == sequence);
    CHECK(uploaded["manifest"] == sha256_hex(slurp(suit)));
    return {uploaded["id"].get<std::string>(), uploaded["manifest"].get<std::string>()};
  }

  Json show(const std::string& id) const { return json({"deployment", "show", id}); }

  // Waits (without asserting on time) until the deployment satisfies `done`; gives up after a minute.
  Json wait_for(const std::string& id, const std::function<bool(const Json&)>& done) const {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    Json d = show(id);
    while (!done(d) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      d = show(id);
    }
    return d;
  }
};

}  // namespace

TEST_CASE("rollout e2e: waves admit devices by their bucket, open after --step-after, and survive a restart") {
  Fleet fleet(20);
  auto [image, manifest] = fleet.release("v2", 2);

  // Wave 1 of a slow rollout: exactly the devices whose bucket is below 30 are offered the update.
  // Deployment IDs are random, and so is the first wave: take one (each supersedes the one before) that
  // admits some of the 20 devices but not all, or the check below could not tell admitted from not.
  Json slow;
  std::string slow_id;
  int expected = 0;
  for (int attempt = 0; attempt < 20 && (expected == 0 || expected == 20); ++attempt) {
    slow = fleet.json({"deployment", "create", "--group", "Thermo/Field Test", "--image", image, "--rollout",
                       "30%,100%", "--step-after", "1h", "--halt-on-failure", "50%"});
    slow_id = slow["id"].get<std::string>();
    expected = 0;
    for (auto& agent : fleet.agents) expected += bucket(slow_id, agent.uid) < 30;
  }
  REQUIRE(expected > 0);
  REQUIRE(expected < 20);
  CHECK(slow["state"] == "active");
  CHECK(slow["wave"] == 1);
  CHECK(slow["manifest"] == manifest);
  CHECK(slow["sequence"] == 2);
  CHECK(slow["step_after"] == 3600);
  for (auto& agent : fleet.agents) {
    bool admitted = bucket(slow_id, agent.uid) < 30;
    auto offer = agent.offer(
        {{"version", "1.0.0"}, {"sequence", 1}, {"manifest_digest", nullptr}, {"state", "device-complete"}});
    CHECK_MESSAGE(offer.is_object() == admitted, agent.uid);
    if (admitted) {
      CHECK(offer["wave"] == 1);
      CHECK(offer["action"] == "install");
      CHECK(offer["manifest"]["id"] == manifest);
    }
  }
  auto shown = fleet.show(slow_id);
  CHECK(shown["admitted"] == expected);
  CHECK(shown["waves"][0]["admitted"] == expected);
  CHECK(shown["waves"][0]["state"] == "open");
  CHECK(shown["waves"][1]["state"] == "pending");
  CHECK(shown["device_status"]["pending"] == expected);
  auto next_wave_at = shown["next_wave_at"];
  CHECK(next_wave_at.is_string());

  // A restart changes nothing: same wave, same next wave time.
  fleet.restart();
  shown = fleet.show(slow_id);
  CHECK(shown["wave"] == 1);
  CHECK(shown["next_wave_at"] == next_wave_at);

  // A newer deployment supersedes it; with --step-after 1s its second wave opens by itself.
  auto fast = fleet.json({"deployment", "create", "--group", "Thermo/Field Test", "--image", image, "--rollout",
                          "30%,100%", "--step-after", "1s"});
  auto fast_id = fast["id"].get<std::string>();
  CHECK(fleet.show(slow_id)["state"] == "superseded");
  CHECK(fleet.kiln({"deployment", "resume", slow_id}).exit_code == 7);
  auto opened = fleet.wait_for(fast_id, [](const Json& d) { return d["wave"] == 2; });
  REQUIRE(opened["wave"] == 2);
  CHECK(opened["rollout"] == 100);
  CHECK(opened["admitted"] == 20);
  CHECK(opened["waves"][0]["state"] == "done");
  CHECK(opened["next_wave_at"].is_null());
  for (auto& agent : fleet.agents) {
    auto offer = agent.offer();
    REQUIRE(offer.is_object());
    CHECK(offer["id"] == fast_id);
    CHECK(offer["wave"] == (bucket(fast_id, agent.uid) < 30 ? 1 : 2));
  }

  // After a restart the last wave is still open.
  fleet.restart();
  CHECK(fleet.show(fast_id)["wave"] == 2);
  CHECK(fleet.agents[0].offer()["id"] == fast_id);

  // Every device installs: completed; watch exits 0 and prints the final state on stdout.
  for (auto& agent : fleet.agents) {
    for (const char* status : {"downloading", "verifying", "installing", "testing"})
      CHECK(agent.report(fast_id, status) == 200);
    CHECK(agent.report(fast_id, "installed", "2.0.0") == 200);
  }
  auto done = fleet.show(fast_id);
  CHECK(done["state"] == "completed");
  CHECK(done["device_status"]["installed"] == 20);
  auto watched = fleet.kiln({"-o", "jsonl", "deployment", "watch", fast_id, "--interval", "200ms"});
  CHECK(watched.exit_code == 0);
  CHECK(Json::parse(watched.out)["state"] == "completed");
  CHECK(fleet.json({"device", "show", "unit-0"})["version"] == "2.0.0");
  auto table = fleet.kiln({"deployment", "show", fast_id});
  CHECK(table.exit_code == 0);
  CHECK(table.out.find("completed") != std::string::npos);
  CHECK(table.out.find("installed") != std::string::npos);
}

TEST_CASE("rollout e2e: failures past the threshold halt the deployment; show says why; resume forgives them") {
  Fleet fleet(20);
  auto [image, manifest] = fleet.release("v2", 2);
  auto d = fleet.json({"deployment", "create", "--group", "Thermo/Field Test", "--image", image, "--halt-on-failure",
                       "10%", "--halt-min-executed", "1"});
  auto id = d["id"].get<std::string>();
  CHECK(d["halt_on_failure"] == 10);

  // 2 of 20 is 10%: not above the threshold.
  CHECK(fleet.agents[0].report(id, "failed") == 200);
  CHECK(fleet.agents[1].report(id, "rolled_back") == 200);
  CHECK(fleet.show(id)["state"] == "active");
  CHECK(fleet.agents[2].offer().is_object());
  // The third failure (a refusal) halts it by itself.
  CHECK(fleet.agents[2].report(id, "refused") == 200);
  auto halted = fleet.show(id);
  CHECK(halted["state"] == "halted");
  CHECK(halted["halt_reason"] == "halted: 3 of 20 admitted devices failed (15%) in wave 1, above 10%");
  CHECK(halted["failures"] == 3);
  CHECK(fleet.agents[3].offer().is_null());
  auto table = fleet.kiln({"deployment", "show", id});
  CHECK(table.out.find("halted: 3 of 20 admitted devices failed (15%) in wave 1, above 10%") != std::string::npos);
  auto failing = fleet.json({"deployment", "devices", id, "--status", "failures"});
  REQUIRE(failing.size() == 3);
  std::set<std::string> failed_devices, failed_statuses;
  for (auto& row : failing) {
    failed_devices.insert(row["device"].get<std::string>());
    failed_statuses.insert(row["status"].get<std::string>());
    CHECK(row["detail"] == "reported by the test");
    CHECK(row["wave"] == 1);
  }
  CHECK(failed_devices == std::set<std::string>{"unit-0", "unit-1", "unit-2"});
  CHECK(failed_statuses == std::set<std::string>{"failed", "rolled_back", "refused"});
  CHECK(fleet.json({"deployment", "devices", id}).size() == 20);
  CHECK(fleet.json({"deployment", "devices", id, "--status", "pending"}).size() == 17);
  CHECK(fleet.kiln({"deployment", "devices", id, "--status", "bogus"}).exit_code == 2);
  auto watched = fleet.kiln({"-o", "json", "deployment", "watch", id});
  CHECK(watched.exit_code == 8);
  CHECK(watched.err.find("kiln deployment devices " + id + " --status failures") != std::string::npos);
  CHECK(Json::parse(watched.out)["state"] == "halted");
  CHECK(watched.err.find("3 of 20") != std::string::npos);

  // The halt survives a restart.
  fleet.restart();
  CHECK(fleet.show(id)["state"] == "halted");

  // Resume: the 3 failures so far are forgiven; the threshold applies to new ones.
  auto resumed = fleet.json({"deployment", "resume", id});
  CHECK(resumed["state"] == "active");
  CHECK(resumed["failures_forgiven"] == 3);
  CHECK(resumed["halt_reason"].is_null());
  CHECK(fleet.agents[3].offer().is_object());
  CHECK(fleet.agents[3].report(id, "failed") == 200);
  CHECK(fleet.agents[4].report(id, "failed") == 200);
  CHECK(fleet.show(id)["state"] == "active");  // 2 new of 20
  CHECK(fleet.agents[5].report(id, "failed") == 200);
  auto again = fleet.show(id);
  CHECK(again["state"] == "halted");
  CHECK(again["halt_reason"] == "halted: 3 of 20 admitted devices failed (15%) in wave 1, above 10%");
  CHECK(again["failures"] == 6);

  // Pause and resume work on an active deployment; a paused one offers nothing.
  fleet.json({"deployment", "resume", id});
  CHECK(fleet.json({"deployment", "pause", id})["state"] == "paused");
  CHECK(fleet.agents[6].offer().is_null());
}

TEST_CASE("rollout e2e: abort sends devices that installed it back to the previous deployment") {
  Fleet fleet(6);
  auto [image1, manifest1] = fleet.release("v1", 1);
  auto [image2, manifest2] = fleet.release("v2", 2);
  auto first =
      fleet.json({"deployment", "create", "--group", "Thermo/Field Test", "--image", image1})["id"].get<std::string>();
  for (auto& agent : fleet.agents) CHECK(agent.report(first, "installed", "1.0.0") == 200);
  CHECK(fleet.show(first)["state"] == "completed");

  auto second =
      fleet.json({"deployment", "create", "--group", "Thermo/Field Test", "--image", image2, "--manifest", manifest2});
  auto second_id = second["id"].get<std::string>();
  CHECK(second["previous"] == first);
  CHECK(fleet.show(first)["state"] == "completed");  // a completed deployment stays completed
  // Devices 0..2 install the second release; 3..5 stay on the first.
  for (int i = 0; i < 3; ++i)
    CHECK(fleet.agents[static_cast<std::size_t>(i)].report(second_id, "installed", "2.0.0") == 200);

  auto aborted = fleet.json({"deployment", "abort", second_id});
  CHECK(aborted["state"] == "aborted");
  CHECK(fleet.kiln({"deployment", "resume", second_id}).exit_code == 7);
  auto watched = fleet.kiln({"-o", "json", "deployment", "watch", second_id});
  CHECK(watched.exit_code == 7);

  // A device running the aborted release (its installed envelope says so) is sent back to the first.
  auto revert = fleet.agents[0].offer({{"version", "2.0.0"}, {"sequence", 2}, {"manifest_digest", manifest2}});
  REQUIRE(revert.is_object());
  CHECK(revert["action"] == "revert");
  CHECK(revert["id"] == first);
  CHECK(revert["sequence"] == 1);
  CHECK(revert["manifest"]["id"] == manifest1);
  CHECK(revert["images"][0]["id"] == image1);
  auto envelope = fleet.agents[0].get(revert["manifest"]["url"].get<std::string>());
  CHECK(envelope.status == 200);
  CHECK(envelope.body == slurp(fleet.dir.file("v1.suit")));
  // Without a digest, the status it reported decides.
  CHECK(fleet.agents[1].offer()["action"] == "revert");
  // Devices still on the first release get nothing.
  CHECK(fleet.agents[3].offer({{"sequence", 1}, {"manifest_digest", manifest1}}).is_null());
  CHECK(fleet.agents[4].offer().is_null());
  // Once reverted, the device reports on the first deployment and is offered nothing more.
  CHECK(fleet.agents[0].report(first, "installed", "1.0.0") == 200);
  CHECK(fleet.agents[0].offer({{"sequence", 1}, {"manifest_digest", manifest1}}).is_null());
  CHECK(fleet.json({"device", "show", "unit-0"})["version"] == "1.0.0");
}

TEST_CASE("rollout e2e: the manifest is served to the deployment's group only; malformed agent bodies answer 400") {
  Fleet fleet(2);
  auto [image, manifest] = fleet.release("v2", 2);
  auto id =
      fleet.json({"deployment", "create", "--group", "Thermo/Field Test", "--image", image})["id"].get<std::string>();
  auto url = "/v1/agent/deployments/" + id + "/manifest";
  auto own = fleet.agents[0].get(url);
  CHECK(own.status == 200);
  CHECK(sha256_hex(own.body) == manifest);
  auto other = fleet.stranger.get(url);
  CHECK(other.status == 404);
  CHECK(Json::parse(other.body)["error"]["code"] == "not_found");
  CHECK(fleet.stranger.offer().is_null());
  CHECK(fleet.stranger.report(id, "installed") == 404);

  for (const char* body : {"{", "[1]", R"({"sequence":-4})", R"({"manifest_digest":"xyz"})", R"({"version":[]})"}) {
    auto r = fleet.agents[0].post("/v1/agent/check-in", body);
    CHECK_MESSAGE(r.status == 400, body);
    CHECK(!Json::parse(r.body)["error"]["message"].get<std::string>().empty());
  }
  for (const char* body : {"{", R"({"deployment":5,"status":"installed"})", R"({"status":"installed"})",
                           R"({"deployment":"x","status":"great"})"}) {
    auto r = fleet.agents[0].post("/v1/agent/status", body);
    CHECK_MESSAGE(r.status == 400, body);
  }

  // Roles: readers show and watch; only operators and admins create, link manifests, pause, resume, abort.
  CHECK(fleet.kiln_as("reader", {"deployment", "show", id}).exit_code == 0);
  CHECK(fleet.kiln_as("reader", {"deployment", "list"}).exit_code == 0);
  auto denied = fleet.kiln_as("reader", {"deployment", "create", "--group", "Thermo/Field Test", "--image", image});
  CHECK(denied.exit_code == 6);
  CHECK(denied.err.find("role reader") != std::string::npos);
  for (const char* action : {"pause", "resume", "abort"})
    CHECK(fleet.kiln_as("factory", {"deployment", action, id}).exit_code == 6);
  CHECK(fleet.kiln_as("factory", {"image", "upload", fleet.dir.file("v2.bin"), "--manifest", fleet.dir.file("v2.suit")})
            .exit_code == 6);
  CHECK(fleet.kiln_as("operator", {"deployment", "pause", id}).exit_code == 0);
  CHECK(fleet.kiln_as("operator", {"deployment", "resume", id}).exit_code == 0);

  // Bad options are usage errors before anything is sent.
  CHECK(fleet
            .kiln({"deployment", "create", "--group", "Thermo/Field Test", "--image", image, "--rollout", "50%,10%",
                   "--step-after", "1m"})
            .exit_code == 2);
  CHECK(fleet.kiln({"deployment", "create", "--group", "Thermo/Field Test", "--image", image, "--rollout", "10%,100%"})
            .exit_code == 2);
  CHECK(fleet
            .kiln({"deployment", "create", "--group", "Thermo/Field Test", "--image", image, "--rollout", "10%,100%",
                   "--step-after", "soon"})
            .exit_code == 2);
  CHECK(
      fleet
          .kiln({"deployment", "create", "--group", "Thermo/Field Test", "--image", image, "--halt-on-failure", "150%"})
          .exit_code == 2);
  // Durations past the service's 366 days, or too large for any clock, are usage errors as well.
  for (const char* after : {"400d", "1e10d", "1e300d", "inf"}) {
    auto r = fleet.kiln({"deployment", "create", "--group", "Thermo/Field Test", "--image", image, "--rollout",
                         "10%,100%", "--step-after", after});
    CHECK_MESSAGE(r.exit_code == 2, after);
    CHECK_MESSAGE(r.err.find("--step-after wants a duration") != std::string::npos, r.err);
  }
  CHECK(fleet.kiln({"deployment", "watch", id, "--interval", "1e300"}).exit_code == 2);

  // Ctrl-C during watch: kiln's own exit path (exit 130, not death by the signal), once it is watching,
  // with only whole lines on stdout.
  auto watcher = test::start_kiln({"-o", "jsonl", "deployment", "watch", id, "--interval", "200ms"}, fleet.env());
  REQUIRE_MESSAGE(watcher->wait_for_line([](const std::string& l) { return l.starts_with("{"); }, 30),
                  watcher->wait(5).err);
  watcher->signal(SIGINT);
  auto interrupted = watcher->wait(30);
  CHECK(interrupted.signal == 0);
  CHECK(interrupted.exit_code == 130);
  CHECK((interrupted.out.empty() || interrupted.out.back() == '\n'));
  std::istringstream watched(interrupted.out);
  for (std::string line; std::getline(watched, line);) CHECK_MESSAGE(Json::accept(line), line);
  CHECK_MESSAGE(interrupted.err.find("interrupt") != std::string::npos, interrupted.err);
}

TEST_CASE("rollout e2e: create refuses what the boards would refuse (exit 3, the reason); --dry-run creates nothing") {
  Fleet fleet(4);
  auto [image, manifest] = fleet.release("v2", 2);

  // A dry run of a good release: the plan on stdout, exit 0, nothing created.
  auto plan = fleet.kiln({"-o", "json", "deployment", "create", "--group", "Thermo/Field Test", "--image", image,
                          "--rollout", "50%,100%", "--step-after", "1m", "--dry-run"});
  INFO(plan.err);
  REQUIRE(plan.exit_code == 0);
  auto p = Json::parse(plan.out);
  CHECK(p["would_create"] == true);
  CHECK(p["devices"] == 4);
  CHECK(p["waves"].size() == 2);
  CHECK(p["checks"].size() == 6);
  auto table = fleet.kiln({"deployment", "create", "--group", "Thermo/Field Test", "--image", image, "--dry-run"});
  CHECK(table.exit_code == 0);
  CHECK(table.out.find("boot_key") != std::string::npos);
  CHECK(table.out.find("5% (once 5 devices finished)") != std::string::npos);
  CHECK(fleet.json({"deployment", "list"}).empty());

  // A raw file that is not an MCUboot image, with a manifest made for it: refused, with the reason.
  auto raw = fleet.dir.file("raw.bin"), suit = fleet.dir.file("raw.suit");
  spit(raw, std::string(5000, 'x'));
  REQUIRE(test::kiln({"manifest", "create", "--component", raw, "--vendor-domain", "example.com", "--class-name",
                      "thermo", "--sequence", "3", "--key", fleet.key_file(), "-o", suit})
              .exit_code == 0);
  auto raw_id = fleet.json({"image", "upload", raw, "--manifest", suit})["id"].get<std::string>();
  auto refused = fleet.kiln({"deployment", "create", "--group", "Thermo/Field Test", "--image", raw_id});
  CHECK(refused.exit_code == 3);
  CHECK(refused.out.empty());
  CHECK_MESSAGE(refused.err.find("is not an MCUboot image") != std::string::npos, refused.err);
  auto dry = fleet.kiln({"-o", "json", "deployment", "create", "--group", "Thermo/Field Test", "--image", raw_id,
                         "--dry-run"});
  CHECK(dry.exit_code == 3);
  CHECK(Json::parse(dry.out)["would_create"] == false);
  CHECK(fleet.json({"deployment", "list"}).empty());

  // Defaults are shown; "never" must be said.
  auto d = fleet.json({"deployment", "create", "--group", "Thermo/Field Test", "--image", image});
  CHECK(d["halt_on_failure"] == 5);
  CHECK(d["halt_min_executed"] == 5);
  CHECK(fleet.kiln({"deployment", "show", d["id"].get<std::string>()}).out.find("5% (once 5 devices finished)") !=
        std::string::npos);
  auto never = fleet.json({"deployment", "create", "--group", "Thermo/Field Test", "--image", image,
                           "--halt-on-failure", "never"});
  CHECK(never["halt_on_failure"] == "never");

  // Bad input: exit 2 naming the option, before anything is sent.
  for (auto args : std::vector<std::vector<std::string>>{{"--halt-on-failure", "-1%"},
                                                         {"--halt-on-failure", "sometimes"},
                                                         {"--halt-on-failure", "101%"},
                                                         {"--halt-min-executed", "0"},
                                                         {"--halt-min-executed", "-3"},
                                                         {"--rollout", "0%"},
                                                         {"--rollout", "150%"},
                                                         {"--rollout", "50%,50%", "--step-after", "1m"},
                                                         {"--rollout", "10%,100%", "--step-after", "0s"},
                                                         {"--rollout", "10%,100%", "--step-after", "-5m"}}) {
    std::vector<std::string> cmd{"deployment", "create", "--group", "Thermo/Field Test", "--image", image};
    cmd.insert(cmd.end(), args.begin(), args.end());
    auto r = fleet.kiln(cmd);
    CHECK_MESSAGE(r.exit_code == 2, args[0], " ", args[1], ": ", r.err);
    auto named = args.size() > 2 && args[1].find(',') != std::string::npos && args[1] != "50%,50%" ? args[2] : args[0];
    CHECK_MESSAGE(r.err.find(named) != std::string::npos, r.err);
  }
}

TEST_CASE("rollout e2e: abort sends each device back to exactly what it ran before; abort again; exit 8 when one cannot") {
  Fleet fleet(6);
  auto [image_a, manifest_a] = fleet.release("a", 1);
  auto [image_b, manifest_b] = fleet.release("b", 2);
  auto [image_c, manifest_c] = fleet.release("c", 3);
  auto runs = [&](std::size_t i, const std::string& manifest, int sequence) {
    return fleet.agents[i].offer({{"sequence", sequence}, {"manifest_digest", manifest}});
  };
  auto install = [&](std::size_t i, const std::string& deployment, const std::string& manifest, int sequence) {
    for (const char* status : {"downloading", "installing", "testing"})
      CHECK(fleet.agents[i].report(deployment, status) == 200);
    CHECK(fleet.agents[i].report(deployment, "installed", "1.0." + std::to_string(sequence)) == 200);
    runs(i, manifest, sequence);
  };
  auto create = [&](const std::string& image) {
    return fleet.json({"deployment", "create", "--group", "Thermo/Field Test", "--image", image})["id"].get<std::string>();
  };
  // Every device runs A; devices 0..2 then install B; C supersedes B, and 0, 1 (from B) and 3, 4, 5 (from A)
  // install it; 2 stays on B.
  auto a = create(image_a);
  for (std::size_t i = 0; i < 6; ++i) {
    runs(i, "0000000000000000000000000000000000000000000000000000000000000000", 0);
    install(i, a, manifest_a, 1);
  }
  auto b = create(image_b);
  for (std::size_t i = 0; i < 3; ++i) install(i, b, manifest_b, 2);
  auto c = create(image_c);
  CHECK(fleet.show(b)["state"] == "superseded");
  for (std::size_t i : {0, 1, 3, 4, 5}) install(i, c, manifest_c, 3);

  // Abort C: 0 and 1 go back to B, 3..5 to A (never to B, which they never ran), 2 is offered nothing.
  auto aborted = fleet.kiln({"-o", "json", "deployment", "abort", c});
  INFO(aborted.err);
  REQUIRE(aborted.exit_code == 0);
  auto revert = Json::parse(aborted.out)["revert"];
  CHECK(revert["reverting"] == 5);
  CHECK(revert["unrevertable"] == 0);
  for (std::size_t i : {0, 1, 3, 4, 5}) {
    auto offer = runs(i, manifest_c, 3);
    REQUIRE_MESSAGE(offer.is_object(), i);
    CHECK(offer["action"] == "revert");
    CHECK(offer["id"] == (i < 2 ? b : a));
    CHECK(offer["manifest"]["id"] == (i < 2 ? manifest_b : manifest_a));
  }
  CHECK(runs(2, manifest_b, 2).is_null());
  // They revert; a second abort of C finds every device back, exits 0 and offers nothing more.
  for (std::size_t i : {0, 1}) install(i, b, manifest_b, 2);
  for (std::size_t i : {3, 4, 5}) install(i, a, manifest_a, 1);
  auto again = fleet.kiln({"-o", "json", "deployment", "abort", c});
  CHECK(again.exit_code == 0);
  auto back = Json::parse(again.out)["revert"];
  CHECK(back["reverting"] == 0);
  for (auto& d : back["devices"]) CHECK(d["state"] == "reverted");
  for (std::size_t i : {0, 1}) CHECK(runs(i, manifest_b, 2).is_null());
  for (std::size_t i : {3, 4, 5}) CHECK(runs(i, manifest_a, 1).is_null());

  // A device whose previous manifest the service never deployed cannot be reverted: abort says so, exit 8.
  auto [image_d, manifest_d] = fleet.release("d", 4);
  auto d = create(image_d);
  runs(5, std::string(64, 'f'), 1);  // what it runs now is no release of this service
  install(5, d, manifest_d, 4);
  install(0, d, manifest_d, 4);
  auto partial = fleet.kiln({"deployment", "abort", d});
  CHECK(partial.exit_code == 8);
  CHECK_MESSAGE(partial.err.find("unit-5") != std::string::npos, partial.err);
  CHECK(partial.err.find("unit-0") == std::string::npos);
  CHECK(partial.err.find("never deployed by this service") != std::string::npos);
  CHECK(fleet.show(d)["state"] == "aborted");
  CHECK(runs(0, manifest_d, 4)["id"] == b);
  CHECK(runs(5, manifest_d, 4).is_null());
}

TEST_CASE("rollout e2e: watch -o jsonl emits one event per state change as it happens; report -o csv|json") {
  Fleet fleet(6);
  auto [image, manifest] = fleet.release("v2", 2);
  auto id = fleet.json({"deployment", "create", "--group", "Thermo/Field Test", "--image", image, "--halt-on-failure",
                        "20%", "--halt-min-executed", "2"})["id"]
                .get<std::string>();
  auto watcher = test::start_kiln({"-o", "jsonl", "deployment", "watch", id, "--interval", "100ms"}, fleet.env());
  REQUIRE(watcher->wait_for_line([](const std::string& l) { return l.find("\"watching\"") != std::string::npos; }, 30));
  CHECK(fleet.agents[0].report(id, "downloading") == 200);
  // Each change is on stdout while watch still runs (flushed), before the next one happens.
  REQUIRE(watcher->wait_for_line([](const std::string& l) { return l.find("\"downloading\"") != std::string::npos; }, 30));
  CHECK(fleet.agents[0].report(id, "installed", "2.0.0") == 200);
  REQUIRE(watcher->wait_for_line([](const std::string& l) { return l.find("\"installed\"") != std::string::npos; }, 30));
  CHECK(fleet.agents[1].report(id, "failed") == 200);  // 1 of 6 failed (16.7%), 2 finished: not above 20%
  REQUIRE(watcher->wait_for_line([](const std::string& l) { return l.find("\"failed\"") != std::string::npos; }, 30));
  CHECK(fleet.agents[2].report(id, "refused") == 200);  // 2 of 6: halted
  auto done = watcher->wait(30);
  CHECK(done.exit_code == 8);
  std::vector<Json> events;
  std::istringstream lines(done.out);
  for (std::string line; std::getline(lines, line);) events.push_back(Json::parse(line));
  REQUIRE(events.size() >= 5);
  CHECK(events.front()["event"] == "watching");
  CHECK(events.back()["event"] == "halted");
  CHECK(events.back()["reason"].get<std::string>().find("2 of 6") != std::string::npos);
  std::vector<std::string> seen;
  for (auto& e : events) {
    CHECK(e["deployment"] == id);
    CHECK(e["at"].is_string());
    if (e["event"] == "device_state") seen.push_back(e["device"].get<std::string>() + ":" + e["to"].get<std::string>());
  }
  CHECK(seen == std::vector<std::string>{"unit-0:downloading", "unit-0:installed", "unit-1:failed", "unit-2:refused"});

  // The report: every device of the group, its final state, versions, failure reason and timings.
  auto report = fleet.json({"deployment", "report", id});
  REQUIRE(report.size() == 6);
  std::map<std::string, Json> rows;
  for (auto& r : report) rows[r["device"].get<std::string>()] = r;
  CHECK(rows["unit-0"]["state"] == "installed");
  CHECK(rows["unit-0"]["version_before"] == "1.0.0");
  CHECK(rows["unit-0"]["version_after"] == "2.0.0");
  CHECK(rows["unit-0"]["duration_seconds"].is_number());
  CHECK(rows["unit-0"]["finished_at"].is_string());
  CHECK(rows["unit-1"]["state"] == "failed");
  CHECK(rows["unit-1"]["failure_reason"] == "reported by the test");
  CHECK(rows["unit-1"]["version_after"] == "1.0.0");
  CHECK(rows["unit-3"]["state"] == "pending");
  CHECK(rows["unit-3"]["finished_at"].is_null());
  auto csv = fleet.kiln({"-o", "csv", "deployment", "report", id});
  CHECK(csv.exit_code == 0);
  CHECK(csv.out.rfind("device,wave,state,version_before,version_after,failure_reason,started_at,finished_at,"
                      "duration_seconds,attempts\n",
                      0) == 0);
  CHECK(std::count(csv.out.begin(), csv.out.end(), '\n') == 7);
  CHECK(csv.out.find("unit-1,1,failed,1.0.0,1.0.0,reported by the test,") != std::string::npos);
  CHECK(fleet.kiln({"deployment", "report", "dep_nope"}).exit_code == 9);
}

TEST_CASE("rollout e2e: show lists the admitted devices that never checked in; an empty group says so") {
  Fleet fleet(4);
  auto [image, manifest] = fleet.release("v2", 2);
  auto empty = fleet.json({"deployment", "create", "--group", "Thermo/Development", "--image", image});
  auto shown = fleet.show(empty["id"].get<std::string>());
  CHECK(shown["devices"] == 0);
  CHECK(shown["attention"].get<std::string>().find("has no devices") != std::string::npos);
  auto id = fleet.json({"deployment", "create", "--group", "Thermo/Field Test", "--image", image})["id"].get<std::string>();
  fleet.agents[0].offer();
  fleet.agents[1].offer();
  shown = fleet.show(id);
  CHECK(shown["silent"] == 2);
  CHECK(shown["silent_devices"] == Json::array({"unit-2", "unit-3"}));
  CHECK(shown["attention"].get<std::string>().find("2 admitted devices never checked in") != std::string::npos);
  auto table = fleet.kiln({"deployment", "show", id});
  CHECK(table.out.find("unit-2, unit-3") != std::string::npos);
  fleet.agents[2].offer();
  fleet.agents[3].offer();
  CHECK(fleet.show(id)["silent"] == 0);
  CHECK(fleet.show(id)["attention"].is_null());
}

TEST_CASE("rollout e2e: controls — a wave pauses on its success condition, a wave error halts at once, an abort "
          "criterion aborts; bad values exit 2") {
  Fleet fleet(12);
  auto [image, manifest] = fleet.release("v2", 2);
  // Bad values: exit 2 with the flag named, nothing created.
  const std::vector<std::vector<std::string>> bad = {
      {"--wave-success", "101%"},
      {"--wave-success=-5%", ""},
      {"--wave-success-then", "pause"},
      {"--wave-success", "90%", "--wave-success-then", "later"},
      {"--wave-error=-1", ""},
      {"--wave-error", "150%"},
      {"--abort-on", "exploded:10%"},
      {"--abort-on", "refused"},
      {"--abort-on", "refused:200%"},
      {"--abort-on", "refused:10%:0"},
      {"--abort-on", "refused:10%", "--abort-on", "refused:20%"},
      {"--rollout", "50%,10%", "--wave-success", "90%"},
  };
  for (auto& extra : bad) {
    std::vector<std::string> args = {"deployment", "create", "--group", "Thermo/Field Test", "--image", image};
    for (auto& x : extra)
      if (!x.empty()) args.push_back(x);
    auto r = fleet.kiln(args);
    INFO(extra[0] << " " << extra[1] << ": " << r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(extra[0].substr(0, 6)) != std::string::npos);
  }
  CHECK(fleet.json({"deployment", "list"}).empty());

  // Wave success, then pause: waves need no --step-after; the wave's devices install, the deployment pauses
  // for a person, and resume opens the next wave.
  std::map<std::string, Agent*> by_uid;
  for (auto& a : fleet.agents) by_uid[a.uid] = &a;
  Json d;
  std::string id;
  std::vector<Agent*> first, later;
  for (int attempt = 0; attempt < 50 && (first.size() < 2 || later.size() < 2); ++attempt) {
    d = fleet.json({"deployment", "create", "--group", "Thermo/Field Test", "--image", image, "--rollout", "50%,100%",
                    "--wave-success", "100%", "--wave-success-then", "pause", "--halt-on-failure", "never"});
    id = d["id"].get<std::string>();
    first.clear();
    later.clear();
    for (auto& a : fleet.agents) (bucket(id, a.uid) < 50 ? first : later).push_back(&a);
  }
  REQUIRE(first.size() >= 2);
  REQUIRE(later.size() >= 2);
  CHECK(d["wave_success"] == Json{{"percent", 100.0}, {"then", "pause"}});
  auto table = fleet.kiln({"deployment", "show", id});
  CHECK(table.out.find("100% of a wave installed, then pause for a resume") != std::string::npos);
  for (auto* a : first) {
    auto offer = a->offer();
    REQUIRE(offer.is_object());
    CHECK(a->report(id, "installed", "1.0.2") == 200);
  }
  CHECK(later[0]->offer().is_null());
  auto paused = fleet.show(id);
  CHECK(paused["state"] == "paused");
  CHECK(paused["awaiting_approval"] == true);
  CHECK(paused["pause_reason"] ==
        fmt::format("wave 1 met its success condition ({} of {} installed, at least 100%): resume to open wave 2",
                    first.size(), first.size()));
  CHECK(fleet.kiln({"deployment", "show", id}).out.find("resume to open wave 2") != std::string::npos);
  auto resumed = fleet.json({"deployment", "resume", id});
  CHECK(resumed["state"] == "active");
  CHECK(resumed["wave"] == 2);
  for (auto* a : later) {
    REQUIRE(a->offer().is_object());
    CHECK(a->report(id, "installed", "1.0.2") == 200);
  }
  CHECK(fleet.show(id)["state"] == "completed");

  // Wave error: more than 1 failed device of the wave halts the deployment on the report that crosses it.
  auto [image3, manifest3] = fleet.release("v3", 3);
  auto e = fleet.json({"deployment", "create", "--group", "Thermo/Field Test", "--image", image3, "--wave-error", "1",
                       "--halt-on-failure", "never"});
  auto eid = e["id"].get<std::string>();
  CHECK(e["wave_error"] == Json{{"count", 1}});
  CHECK(fleet.agents[0].report(eid, "failed") == 200);
  CHECK(fleet.show(eid)["state"] == "active");
  CHECK(fleet.agents[1].report(eid, "refused") == 200);
  auto halted = fleet.show(eid);
  CHECK(halted["state"] == "halted");
  CHECK(halted["halt_reason"] == "halted: 2 devices of wave 1 failed, above the wave error condition of 1");
  CHECK(fleet.agents[2].offer().is_null());
  auto watched = fleet.kiln({"deployment", "watch", eid});
  CHECK(watched.exit_code == 8);

  // Abort criterion: more than 20% of executed devices timed out or refused... here refused, once 3 executed.
  auto [image4, manifest4] = fleet.release("v4", 4);
  auto a = fleet.json({"deployment", "create", "--group", "Thermo/Field Test", "--image", image4, "--abort-on",
                       "refused:20%:3", "--halt-on-failure", "never"});
  auto aid = a["id"].get<std::string>();
  CHECK(a["abort_criteria"] == Json::array({Json{{"kind", "refused"}, {"percent", 20.0}, {"min_executed", 3}}}));
  CHECK(fleet.agents[0].report(aid, "refused") == 200);
  CHECK(fleet.agents[1].report(aid, "installed", "1.0.4") == 200);
  CHECK(fleet.show(aid)["state"] == "active");  // 2 executed: below the minimum
  CHECK(fleet.agents[2].report(aid, "installed", "1.0.4") == 200);
  auto aborted = fleet.show(aid);  // 1 refused of 3 executed (33%)
  CHECK(aborted["state"] == "aborted");
  CHECK(aborted["halt_reason"] ==
        "aborted: 1 of 3 executed devices ended refused (33.3%), above the abort criterion refused 20% (once 3 "
        "executed)");
  auto watch_aborted = fleet.kiln({"deployment", "watch", aid});
  CHECK(watch_aborted.exit_code == 7);
  CHECK(watch_aborted.err.find("above the abort criterion refused 20%") != std::string::npos);
  // The devices that installed it are sent back to what they ran before (v3's deployment never installed
  // on them: v2's, which they installed).
  auto back = fleet.agents[1].offer();
  REQUIRE(back.is_object());
  CHECK(back["action"] == "revert");
}

TEST_CASE("rollout e2e: controls — a device silent past --timeout is timed_out; --abort-on timed_out aborts") {
  Fleet fleet(4);
  auto [image, manifest] = fleet.release("v2", 2);
  for (const char* bad : {"rebooting=1m", "downloading=0s", "downloading", "downloading=8d"}) {
    auto r = fleet.kiln({"deployment", "create", "--group", "Thermo/Field Test", "--image", image, "--timeout", bad});
    INFO(bad << ": " << r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("--timeout") != std::string::npos);
  }
  auto d = fleet.json({"deployment", "create", "--group", "Thermo/Field Test", "--image", image, "--timeout",
                       "downloading=1s", "--timeout", "testing=1h", "--abort-on", "timed_out:30%:1",
                       "--halt-on-failure", "never"});
  auto id = d["id"].get<std::string>();
  CHECK(d["timeouts"] == Json{{"downloading", 1}, {"testing", 3600}});
  CHECK(fleet.kiln({"deployment", "show", id}).out.find("downloading 1s, testing 1h (then timed_out, a failure)") !=
        std::string::npos);
  // unit-0 starts downloading and goes silent (its power is cut); unit-1 installs.
  REQUIRE(fleet.agents[0].offer().is_object());
  CHECK(fleet.agents[0].report(id, "downloading") == 200);
  CHECK(fleet.agents[1].report(id, "installed", "1.0.2") == 200);
  std::this_thread::sleep_for(std::chrono::milliseconds(2200));
  // The next check-in of any device of the group records the timeout, and the abort criterion follows:
  // 1 timed out of 2 executed (50%) is above 30%.
  fleet.agents[2].check_in();
  auto shown = fleet.show(id);
  CHECK(shown["state"] == "aborted");
  CHECK(shown["device_status"]["timed_out"] == 1);
  CHECK(shown["halt_reason"] ==
        "aborted: 1 of 2 executed devices ended timed_out (50%), above the abort criterion timed_out 30% (once 1 "
        "executed)");
  auto timed_out = fleet.json({"deployment", "devices", id, "--status", "timed_out"});
  REQUIRE(timed_out.size() == 1);
  CHECK(timed_out[0]["device"] == "unit-0");
  CHECK(timed_out[0]["detail"].get<std::string>().find("while downloading, above the 1 s timeout") !=
        std::string::npos);
}

TEST_CASE("rollout e2e: controls — --rate admits new devices over time as the rule allows; bad values exit 2") {
  Fleet fleet(6);
  auto [image, manifest] = fleet.release("v2", 2);
  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {"--rate", "0"}, {"--rate=-5", ""}, {"--rate", "fast"}, {"--rate", "10", "--rate-factor", "0"},
           {"--rate", "10", "--rate-factor", "2"}, {"--rate", "10", "--rate-increase-on", "installed:5"},
           {"--rate-factor", "2"}}) {
    std::vector<std::string> args = {"deployment", "create", "--group", "Thermo/Field Test", "--image", image};
    for (auto& x : bad)
      if (!x.empty()) args.push_back(x);
    auto r = fleet.kiln(args);
    INFO(bad[0] << ": " << r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("--rate") != std::string::npos);
  }
  // 60 per minute (one a second), doubled each 2 notified devices, at most 120 per minute.
  auto started = std::chrono::steady_clock::now();
  auto d = fleet.json({"deployment", "create", "--group", "Thermo/Field Test", "--image", image, "--rate", "60/m",
                       "--rate-factor", "2", "--rate-increase-on", "notified:2", "--rate-max", "120"});
  auto id = d["id"].get<std::string>();
  CHECK(fleet.kiln({"deployment", "show", id}).out.find("60/min, x2 each 2 devices notified, at most 120/min") !=
        std::string::npos);
  // Every agent checks in every 100 ms; the admitted count never runs ahead of the rule: 1 at once, 1 a
  // second until 2 were notified, then 2 a second. Whole seconds of the service's clock: allow one more.
  std::set<std::string> offered;
  std::vector<std::pair<double, std::size_t>> seen;
  while (offered.size() < fleet.agents.size() &&
         std::chrono::steady_clock::now() - started < std::chrono::seconds(20)) {
    for (auto& a : fleet.agents)
      if (a.offer().is_object()) offered.insert(a.uid);
    double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    seen.emplace_back(t, offered.size());
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(offered.size() == fleet.agents.size());
  for (auto& entry : seen) {
    const auto t = entry.first;  // named copies: clang 14 lambdas (doctest's INFO) cannot capture bindings
    const auto n = entry.second;
    // The rule at t: 1 at once, 1 a second until 2 were notified (t = 1), then 2 a second: 2 + 2 (t - 1).
    // The service counts whole seconds of its clock from the second it created the deployment, up to one
    // second ahead of ours: the bound at t + 1.
    double bound = 2 + 2 * t;
    INFO("t=" << t << " admitted " << n);
    CHECK(static_cast<double>(n) <= bound);
  }
  CHECK(seen.front().second <= 2);  // the first moments: one device, maybe two across a second boundary
  auto shown = fleet.show(id);
  CHECK(shown["rate_now"]["per_minute"] == 120);
  CHECK(shown["device_status"]["notified"].get<int>() + shown["device_status"]["pending"].get<int>() == 6);
}

TEST_CASE("rollout e2e: controls — --start-at holds devices until the scheduled start; a bad time exits 2") {
  Fleet fleet(2);
  auto [image, manifest] = fleet.release("v2", 2);
  for (const char* bad : {"tomorrow", "2026-12-24T02:00:00", "2026-02-30T00:00:00Z"}) {
    auto r = fleet.kiln({"deployment", "create", "--group", "Thermo/Field Test", "--image", image, "--start-at", bad});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("--start-at") != std::string::npos);
  }
  auto start = std::chrono::system_clock::now() + std::chrono::seconds(3);
  auto start_at = iso8601(std::chrono::floor<std::chrono::seconds>(start).time_since_epoch().count());
  auto d = fleet.json({"deployment", "create", "--group", "Thermo/Field Test", "--image", image, "--start-at", start_at});
  auto id = d["id"].get<std::string>();
  CHECK(d["schedule"]["start_at"] == start_at);
  CHECK(fleet.kiln({"deployment", "show", id}).out.find(start_at) != std::string::npos);
  CHECK(fleet.agents[0].offer().is_null());
  CHECK(fleet.agents[1].offer().is_null());
  std::this_thread::sleep_until(start + std::chrono::milliseconds(1100));
  auto offer = fleet.agents[0].offer();
  REQUIRE(offer.is_object());
  CHECK(offer["id"] == id);
}
