// An over-the-air test bench for end-to-end tests: a real kiln-service with its device-agent
// listener, a factory station (CA, boot/release key), N kiln-board-emu boards running the update
// agent — provisioned with `kiln factory`, imported, claimed and assigned to a group — and helpers
// to sign images, make manifests, deploy, and read each board's state from the board and the service.
// Header-only; uses doctest assertions. Reused by the agent test and larger fleet tests.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "signing/key_ref.hpp"
#include "tests/support/emulator_process.hpp"
#include "tests/support/fault_proxy.hpp"
#include "tests/support/haproxy.hpp"
#include "tests/support/process.hpp"
#include "tests/support/service_process.hpp"
#include "tests/support/temp_dir.hpp"
#include "transport/link.hpp"
#include "transport/smp_client.hpp"

namespace kiln::test {

struct OtaFleetOptions {
  int boards = 3;
  double check_in_interval = 0.3;              // seconds
  std::vector<std::string> emulator_args{};    // more kiln-board-emu options (e.g. --fail-version 1.3.0)
  std::string product = "Thermo";
  std::string group = "Thermo/Field Test";
  int jobs = 4;                                // factory run --jobs
  bool proxy = false;                          // boards reach the service through a FaultProxy (proxy())
  // The factory's firmware step programs factory_version (sequence 1, release key) and installs the
  // manifest key and manifest; false: boards keep the emulator's 1.0.0 and the manifest key is
  // installed over SMP before provisioning (no flash writes during provisioning).
  bool factory_firmware = true;
  std::string factory_version = "1.0.1";
  // kiln-service runs with --delivery-key delivery.pem (an ECDSA P-256 key made for it, 0600).
  bool delivery_key = false;
  // ... with the delivery key on a SoftHSM2 token instead (delivery_key_ref(): its pkcs11: URI).
  bool delivery_key_on_token = false;
  // Appended to the station profile before provisioning (e.g. an [encryption] table).
  std::string profile_extra{};
  // M-of-N manifest trust: the factory installs release.pem plus manifest2.pem .. manifestN.pem (made for the
  // bench) with this threshold, the product on the service registers the same, and the factory manifest is
  // signed by the first M of them. 1 key: release.pem alone, 1 of 1.
  int manifest_keys = 1;
  int manifest_threshold = 1;
  // `kiln-service init --store URL` (a PostgreSQL database); empty: SQLite in the service directory.
  std::string store{};
  // Several `kiln-service run` on copies of the initialised directory (svc, svc2, ...) sharing the store and
  // one --blob-dir (blobs/), behind HAProxy (tests/support/haproxy.hpp): kiln and the boards talk to HAProxy.
  // Needs `store` (copies of a SQLite directory would be separate services).
  int instances = 1;
};

class OtaFleet {
 public:
  using Json = nlohmann::json;

  explicit OtaFleet(OtaFleetOptions options = {}) : options_(std::move(options)) {
    std::vector<std::string> init_args{"init", "--dir", service_dir()};
    if (!options_.store.empty()) init_args.insert(init_args.end(), {"--store", options_.store});
    auto init = run_process(bin_path("kiln-service"), init_args);
    REQUIRE_MESSAGE(init.exit_code == 0, init.err);
    // The service is told how often its agents check in (it records last_seen at most that often).
    std::vector<std::string> service_args{
        "--check-in-after", std::to_string(std::max(1, static_cast<int>(std::ceil(options_.check_in_interval))))};
    if (options_.delivery_key) {
      REQUIRE(kiln({"key", "generate", "-t", "ecdsa-p256", "-o", file("delivery.pem")}).exit_code == 0);
      delivery_key_ref_ = file("delivery.pem");
      service_args.insert(service_args.end(), {"--delivery-key", delivery_key_ref_});
    }
    if (options_.delivery_key_on_token) {
      const std::string module = "/usr/lib/softhsm/libsofthsm2.so";
      std::filesystem::create_directories(file("tokens"));
      write(file("softhsm2.conf"), "directories.tokendir = " + file("tokens") + "\n");
      ::setenv("SOFTHSM2_CONF", file("softhsm2.conf").c_str(), 1);  // the service inherits it
      REQUIRE(run_process("/usr/bin/softhsm2-util",
                          {"--init-token", "--free", "--label", "D", "--pin", "1234", "--so-pin", "5678"})
                  .exit_code == 0);
      auto made = run_process("/usr/bin/pkcs11-tool", {"--module", module, "--login", "--pin", "1234", "--keypairgen",
                                                       "--key-type", "EC:prime256v1", "--usage-derive", "--label",
                                                       "delivery", "--id", "01"});
      REQUIRE_MESSAGE(made.exit_code == 0, made.err);
      write(file("delivery.pin"), "1234\n");
      std::filesystem::permissions(file("delivery.pin"), std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
      delivery_key_ref_ = "pkcs11:token=D;object=delivery?module-path=" + module + "&pin-source=" + file("delivery.pin");
      service_args.insert(service_args.end(), {"--delivery-key", delivery_key_ref_});
    }
    if (options_.instances > 1) {
      REQUIRE_MESSAGE(!options_.store.empty(), "several instances share a PostgreSQL store");
      std::filesystem::create_directories(file("blobs"));
      service_args.insert(service_args.end(), {"--blob-dir", file("blobs")});
      for (int i = 2; i <= options_.instances; ++i)
        std::filesystem::copy(service_dir(), instance_dir(i), std::filesystem::copy_options::recursive);
    }
    service_ = std::make_unique<ServiceProcess>(service_dir(), 0, true, service_args);
    REQUIRE(service_->agent_port() > 0);
    if (options_.instances > 1) {
      Haproxy::Frontends frontends{{"api", {service_->port()}}, {"agents", {service_->agent_port()}}};
      for (int i = 2; i <= options_.instances; ++i) {
        more_.push_back(std::make_unique<ServiceProcess>(instance_dir(i), 0, true, service_args));
        frontends["api"].push_back(more_.back()->port());
        frontends["agents"].push_back(more_.back()->agent_port());
      }
      haproxy_ = std::make_unique<Haproxy>(dir_.path(), frontends);
    }
    if (options_.proxy) proxy_ = std::make_unique<FaultProxy>(service_->agent_port());
    // Keys: the release key signs images (MCUboot boot key) and manifests; `other` is an attacker's.
    for (const char* name : {"release.pem", "other.pem", "station-ca.key.pem"})
      REQUIRE(kiln({"key", "generate", "-t", "ecdsa-p256", "-o", file(name)}).exit_code == 0);
    for (int i = 2; i <= options_.manifest_keys; ++i)
      REQUIRE(kiln({"key", "generate", "-t", "ecdsa-p256", "-o", file(manifest_key_file(i))}).exit_code == 0);
    auto ca = run_process("/usr/bin/openssl",
                          {"req", "-x509", "-new", "-key", file("station-ca.key.pem"), "-subj", "/CN=OTA Station CA/O=Test",
                           "-days", "30", "-out", file("station-ca.pem"), "-addext", "basicConstraints=critical,CA:true",
                           "-addext", "keyUsage=critical,keyCertSign,cRLSign"});
    REQUIRE_MESSAGE(ca.exit_code == 0, ca.err);
    write_vendor_root(emu_dir(), file("vendor-root.pem"));

    start_emulator();
    if (!options_.factory_firmware) install_manifest_keys();
    provision();
    register_on_service();
  }

  // ---- environment ----
  std::string file(const std::string& name) const { return dir_.file(name); }
  std::string service_dir() const { return dir_.file("svc"); }
  // Instance i's copy of the service directory (1: service_dir()).
  std::string instance_dir(int i) const { return i == 1 ? service_dir() : dir_.file("svc" + std::to_string(i)); }
  std::string emu_dir() const { return dir_.file("boards"); }
  // The service URL installed on the boards: the agent listener, or the proxy in front of it.
  std::string agent_url() const {
    if (haproxy_) return haproxy_->url("agents");
    return "https://127.0.0.1:" + std::to_string(proxy_ ? proxy_->port() : service_->agent_port());
  }
  // The API as kiln reaches it: HAProxy in front of the instances, else the one instance.
  std::string api_url() const { return haproxy_ ? haproxy_->url("api") : service_->url(); }
  // HAProxy in front of the instances (options().instances > 1).
  Haproxy& haproxy() { return *haproxy_; }
  FaultProxy& proxy() { return *proxy_; }
  // The service's delivery key (a file or a pkcs11: URI); empty without one.
  const std::string& delivery_key_ref() const { return delivery_key_ref_; }
  const std::vector<std::string>& uids() const { return emulator_->uids(); }
  // What every board runs when it leaves the factory.
  std::string initial_version() const { return options_.factory_firmware ? options_.factory_version : "1.0.0"; }
  const OtaFleetOptions& options() const { return options_; }
  // The bench's i-th manifest key (1: release.pem).
  static std::string manifest_key_file(int i) { return i == 1 ? "release.pem" : "manifest" + std::to_string(i) + ".pem"; }
  OtaFleetOptions& options() { return options_; }  // e.g. change emulator_args before restart_emulator()
  EmulatorProcess& emulator() { return *emulator_; }
  ServiceProcess& service() { return *service_; }
  // Instance i of options().instances (1: service()).
  ServiceProcess& instance(int i) { return i == 1 ? *service_ : *more_.at(static_cast<std::size_t>(i - 2)); }

  // `url`: another service URL than api_url() (e.g. one instance of several, bypassing HAProxy).
  ProcessResult kiln(const std::vector<std::string>& args, int timeout_seconds = 120, const std::string& url = "") const {
    ProcessOptions o;
    o.env["XDG_CONFIG_HOME"] = dir_.file("xdg");
    o.env["KILN_EMU_DIR"] = emu_dir();
    o.timeout_seconds = timeout_seconds;
    if (service_) {
      o.env["KILN_SERVICE"] = url.empty() ? api_url() : url;
      o.env["KILN_CA_FILE"] = service_dir() + "/ca.pem";
      std::ifstream in(service_dir() + "/admin.token");
      std::string token;
      std::getline(in, token);
      o.env["KILN_TOKEN"] = token;
    }
    return run_kiln(args, o);
  }
  Json json(std::vector<std::string> args) const {
    args.insert(args.begin(), {"-o", "json"});
    auto r = kiln(args);
    INFO("kiln " << args[2] << " " << (args.size() > 3 ? args[3] : "") << ": " << r.err);
    REQUIRE(r.exit_code == 0);
    return Json::parse(r.out);
  }

  // Restarts the emulator (a power cycle of every board) with the same boards and agent options.
  void restart_emulator(const std::vector<std::string>& extra_args = {}) {
    emulator_.reset();
    start_emulator(extra_args);
  }
  void stop_emulator() { emulator_.reset(); }
  void start_emulator(const std::vector<std::string>& extra_args = {}) {
    std::vector<std::string> args{"--agent", "--check-in-interval", fmt_seconds(options_.check_in_interval), "-v"};
    args.insert(args.end(), options_.emulator_args.begin(), options_.emulator_args.end());
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    emulator_ = std::make_unique<EmulatorProcess>(emu_dir(), options_.boards, args);
  }

  // ---- firmware ----
  // An MCUboot image of `version` signed with `key` (a file name in the bench directory).
  std::string sign_image(const std::string& version, const std::string& key = "release.pem",
                         std::size_t payload = 64 * 1024) {
    std::string name = "app-" + version + "-" + key;
    std::string raw(payload, '\0');
    std::mt19937 rng(static_cast<unsigned>(std::hash<std::string>{}(name)));
    for (auto& c : raw) c = static_cast<char>(rng());
    write(file(name + ".bin"), raw);
    auto signed_image = file(name + ".signed.bin");
    auto r = kiln({"image", "sign", file(name + ".bin"), signed_image, "-k", file(key), "--version", version,
                   "--header-size", "0x200", "--slot-size", "0x1000000", "--pad-header"});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    return signed_image;
  }
  // A SUIT envelope for `image` with `sequence`, signed with `key`.
  std::string make_manifest(const std::string& image, std::uint64_t sequence, const std::string& key = "release.pem") {
    auto out = image + ".seq" + std::to_string(sequence) + "." + key + ".suit";
    auto r = kiln({"manifest", "create", "--component", image, "--vendor-domain", "example.com", "--class-name",
                   "ota-board", "--sequence", std::to_string(sequence), "--key", file(key), "-o", out});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    return out;
  }
  // Uploads image and manifest, creates a deployment to the fleet's group; returns the deployment.
  // (The service offers a group's newest deployment: a new one supersedes the previous.)
  Json deploy(const std::string& image, const std::string& manifest, const std::vector<std::string>& extra = {}) {
    auto uploaded = json({"image", "upload", image, "--manifest", manifest});
    std::vector<std::string> args{"deployment", "create", "--group", options_.group, "--image",
                                  uploaded["id"].get<std::string>()};
    if (std::find(extra.begin(), extra.end(), "--rollout") == extra.end()) args.insert(args.end(), {"--rollout", "100%"});
    args.insert(args.end(), extra.begin(), extra.end());
    return json(args);
  }

  // ---- observing ----
  // `kiln board info` of one board: the version running in slot 0.
  std::string board_version(const std::string& uid) const {
    auto r = kiln({"-o", "json", "board", "info", "-b", uid});
    if (r.exit_code != 0) return "";
    auto info = Json::parse(r.out);
    for (const auto& slot : info["firmware"])
      if (slot["slot"] == 0) return slot["version"].get<std::string>();
    return "";
  }
  // The board's firmware record (64:7): sequence and manifest digest, read over its socket.
  Json board_record(const std::string& uid) const {
    SmpClient client(open_socket_link(emu_dir() + "/" + uid + ".sock"));
    SmpRequest request;
    request.group = 64;
    request.command = 7;
    smp::Body body = client.call(request);
    Json out{{"sequence", body.value("sequence", 0)}};
    if (body.contains("manifest_digest") && body["manifest_digest"].is_binary()) {
      std::string hex;
      for (auto b : body["manifest_digest"].get_binary()) hex += fmt_hex(b);
      out["manifest_digest"] = hex;
    }
    return out;
  }
  // What the board's agent decided for a deployment ("installed", "refused", "rolled_back", "failed"),
  // from its state in the board directory; empty while undecided.
  std::string agent_outcome(const std::string& uid, const std::string& deployment) const {
    std::ifstream in(emu_dir() + "/" + uid + "/agent/state.json");
    if (!in) return "";
    auto state = Json::parse(in, nullptr, false);
    if (!state.is_object() || !state.contains("done")) return "";
    for (const auto& [key, status] : state["done"].items())
      if (key.rfind(deployment + ":", 0) == 0) return status.get<std::string>();
    return "";
  }
  bool wait_all_outcome(const std::string& deployment, const std::string& status, int seconds = 60) const {
    return wait_for([&] {
      for (const auto& uid : uids())
        if (agent_outcome(uid, deployment) != status) return false;
      return true;
    }, seconds);
  }
  // `kiln deployment show ID -o json`.
  Json deployment(const std::string& id) const { return json({"deployment", "show", id}); }
  // Waits until the service counts `count` devices (default: all) in `status` for the deployment.
  bool wait_service_status(const std::string& id, const std::string& status, int count = -1, int seconds = 60) const {
    if (count < 0) count = static_cast<int>(uids().size());
    return wait_for([&] { return deployment(id)["device_status"].value(status, 0) == count; }, seconds);
  }
  // `kiln deployment devices ID -o json`: device id -> {wave, status, detail, version}.
  std::map<std::string, Json> deployment_devices(const std::string& id) const {
    std::map<std::string, Json> rows;
    for (const auto& row : json({"deployment", "devices", id})) rows[row["device"].get<std::string>()] = row;
    return rows;
  }
  // The service's view: device id -> row of `kiln device list`.
  std::map<std::string, Json> service_devices() const {
    auto r = kiln({"-o", "jsonl", "device", "list", "--group", options_.group});
    std::map<std::string, Json> rows;
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) {
        auto row = Json::parse(line);
        rows[row["id"].get<std::string>()] = row;
      }
    return rows;
  }
  // A text field of a JSON row, "" when missing or null.
  static std::string text(const Json& row, const std::string& key) {
    auto it = row.find(key);
    return it != row.end() && it->is_string() ? it->get<std::string>() : std::string();
  }
  // Polls `done` every 200 ms until it holds or `seconds` pass (a bound for a wait, not a timing assertion).
  static bool wait_for(const std::function<bool()>& done, int seconds = 60) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return done();
  }
  bool wait_all_running(const std::string& version, int seconds = 60) const {
    return wait_for([&] {
      for (const auto& uid : uids())
        if (board_version(uid) != version) return false;
      return true;
    }, seconds);
  }

 private:
  static void write(const std::string& path, const std::string& data) { std::ofstream(path, std::ios::binary) << data; }
  static std::string fmt_seconds(double s) {
    std::ostringstream o;
    o << s;
    return o.str();
  }
  static std::string fmt_hex(std::uint8_t b) {
    const char* digits = "0123456789abcdef";
    return {digits[b >> 4], digits[b & 15]};
  }

  // The SUIT trust anchor goes in before the factory locks the board (64:3 manifest_key).
  void install_manifest_keys() {
    Bytes der = load_public_key(file("release.pem"));
    for (const auto& uid : uids()) {
      SmpClient client(open_socket_link(emu_dir() + "/" + uid + ".sock"));
      SmpRequest request;
      request.op = smp::Op::write;
      request.group = 64;
      request.command = 3;
      request.body = smp::Body{{"manifest_key", smp::binary(der)}};
      smp::Body body = client.call_raw(request);
      REQUIRE_MESSAGE(!body.contains("err"), body.dump());
    }
  }

  void provision() {
    std::vector<std::string> args{"factory", "init", "--ca-key", file("station-ca.key.pem"), "--ca-cert",
                                  file("station-ca.pem"), "--vendor-root", file("vendor-root.pem"), "--boot-key",
                                  file("release.pem"), "--product", options_.product, "--service", agent_url(),
                                  "--trust-anchor", service_dir() + "/ca.pem", "-o", file("station.toml")};
    if (options_.factory_firmware) {
      auto image = sign_image(options_.factory_version);
      auto manifest = make_manifest(image, 1);
      for (int i = 2; i <= options_.manifest_threshold; ++i) {
        auto signed_more = kiln({"manifest", "sign", manifest, "--key", file(manifest_key_file(i))});
        REQUIRE_MESSAGE(signed_more.exit_code == 0, signed_more.err);
      }
      args.insert(args.end(), {"--image", image, "--manifest", manifest});
      for (int i = 1; i <= options_.manifest_keys; ++i) args.insert(args.end(), {"--manifest-key", file(manifest_key_file(i))});
      if (options_.manifest_keys > 1)
        args.insert(args.end(), {"--manifest-threshold", std::to_string(options_.manifest_threshold)});
    }
    auto init = kiln(args);
    REQUIRE_MESSAGE(init.exit_code == 0, init.err);
    if (!options_.profile_extra.empty()) std::ofstream(file("station.toml"), std::ios::app) << "\n" << options_.profile_extra;
    auto run = kiln({"factory", "run", "--all", "--jobs", std::to_string(options_.jobs), "--profile", file("station.toml")});
    REQUIRE_MESSAGE(run.exit_code == 0, run.err);
    auto exported = kiln({"factory", "ledger", "export", "--profile", file("station.toml"), "-o", file("units.jsonl")});
    REQUIRE_MESSAGE(exported.exit_code == 0, exported.err);
  }

  void register_on_service() {
    // The product trusts the release key as boot key and manifest key (what the factory installs).
    std::vector<std::string> product{"product", "create", options_.product, "--boot-key", file("release.pem")};
    for (int i = 1; i <= options_.manifest_keys; ++i) product.insert(product.end(), {"--manifest-key", file(manifest_key_file(i))});
    if (options_.manifest_keys > 1)
      product.insert(product.end(), {"--manifest-threshold", std::to_string(options_.manifest_threshold)});
    json(product);
    json({"device", "ca", "add", file("station-ca.pem"), "--key",
          file("station-ca.key.pem")});  // first: the service imports bundles signed by a registered station
    json({"device", "import", file("units.jsonl")});
    for (const auto& uid : uids()) json({"device", "claim", "--id", uid, "--board", uid});
    std::vector<std::string> assign{"device", "assign"};
    assign.insert(assign.end(), uids().begin(), uids().end());
    assign.insert(assign.end(), {"--group", options_.group});
    json(assign);
  }

  OtaFleetOptions options_;
  TempDir dir_;
  std::string delivery_key_ref_;
  std::unique_ptr<ServiceProcess> service_;
  std::vector<std::unique_ptr<ServiceProcess>> more_;  // instances 2.. (options_.instances)
  std::unique_ptr<Haproxy> haproxy_;
  std::unique_ptr<FaultProxy> proxy_;
  std::unique_ptr<EmulatorProcess> emulator_;
};

}  // namespace kiln::test
