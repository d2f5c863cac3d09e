// The end-to-end service setting: a real `kiln-service` initialised in a temp dir (its tenant trusts a station
// CA, registered with the real `kiln device ca add`), and the real `kiln` pointed at it. Header-only.
#pragma once

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/process.hpp"
#include "tests/support/service_process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_certificates.hpp"

namespace kiln::test {

// Writes `data` to `path`; a secret is made 0600.
inline void spit(const std::filesystem::path& path, const std::string& data, bool secret = false) {
  std::ofstream(path, std::ios::binary) << data;
  if (secret)
    std::filesystem::permissions(path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
}

// A file's permission bits (0600).
inline unsigned mode_of(const std::filesystem::path& path) {
  return static_cast<unsigned>(std::filesystem::status(path).permissions() & std::filesystem::perms::all);
}

// The rows of JSON-lines output.
inline std::vector<nlohmann::json> jsonl(const std::string& out) {
  std::vector<nlohmann::json> rows;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

class ServiceSetup {
 public:
  using Json = nlohmann::json;

  TempDir dir;
  std::filesystem::path data = dir.path() / "svc";
  std::string admin_token_file;
  std::unique_ptr<ServiceProcess> service;
  // The factory station CA the tenant registers: it signs ledger bundles and issues station certificates.
  TestCa station{"Test Station CA"};

  // With agents: the service's agent listener (mutual TLS) too.
  explicit ServiceSetup(bool agents = false) {
    auto init = run_process(bin_path("kiln-service"), {"init", "--dir", data.string()});
    REQUIRE_MESSAGE(init.exit_code == 0, init.err);
    admin_token_file = (data / "admin.token").string();
    service = std::make_unique<ServiceProcess>(data, 0, agents);
    spit(dir.file("station-ca.pem"), station.pem);
    spit(dir.file("station-ca.key"), station.key.private_pem(), true);
    auto added =
        kiln({"device", "ca", "add", "--stations", dir.file("station-ca.pem"), "--key", dir.file("station-ca.key")});
    REQUIRE_MESSAGE(added.exit_code == 0, added.err);
  }

  // Writes unit lines as a bundle signed by the station CA's key (as kiln factory ledger export does).
  std::string write_bundle(const std::string& name, const std::string& units) const {
    auto file = dir.file(name);
    spit(file, signed_bundle(units, station.key));
    return file;
  }

  // kiln's environment: the service, its CA, the admin token (or the one in `token_file`).
  ProcessOptions env(const std::string& token_file = {}) const {
    ProcessOptions o;
    o.env["XDG_CONFIG_HOME"] = dir.file("xdg");
    o.env["KILN_SERVICE"] = service->url();
    o.env["KILN_CA_FILE"] = (data / "ca.pem").string();
    o.env["KILN_TOKEN"] = token_of(token_file.empty() ? admin_token_file : token_file);
    return o;
  }
  // The token a token file holds.
  static std::string token_of(const std::string& file) {
    auto token = slurp(file);
    if (!token.empty() && token.back() == '\n') token.pop_back();
    return token;
  }
  ProcessResult kiln(const std::vector<std::string>& args, const std::string& token_file = {}) const {
    return test::kiln(args, env(token_file));
  }
  // A kiln command that must succeed, run with -o json: its output.
  Json json(const std::vector<std::string>& args, const std::string& token_file = {}) const {
    auto with_output = args;
    with_output.insert(with_output.begin(), {"-o", "json"});
    auto r = kiln(with_output, token_file);
    INFO("kiln " << args[0] << " " << (args.size() > 1 ? args[1] : "") << ": " << r.err);
    REQUIRE(r.exit_code == 0);
    return Json::parse(r.out);
  }
  // Another tenant (kiln-service tenant create, beside the running service): the file holding its admin token.
  std::string add_tenant(const std::string& name) const {
    auto file = dir.file(name + ".token");
    auto r = run_process(bin_path("kiln-service"),
                         {"tenant", "create", "--dir", data.string(), "--name", name, "--token-file", file});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    return file;
  }
  // A new token of `role` (kiln-service token create): the file holding it.
  std::string token(const std::string& role) const {
    auto file = dir.file(role + ".token");
    auto r = run_process(bin_path("kiln-service"),
                         {"token", "create", "--dir", data.string(), "--role", role, "--token-file", file});
    REQUIRE(r.exit_code == 0);
    return file;
  }
};

}  // namespace kiln::test
