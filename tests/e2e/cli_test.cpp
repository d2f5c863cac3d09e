// End-to-end tests of the kiln command frame: help, version, output formats, config, exit codes.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <vector>
#include <nlohmann/json.hpp>

#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "kiln/version.hpp"

using kiln::test::run_kiln;
using kiln::test::ProcessOptions;
using kiln::test::TempDir;
using nlohmann::json;

TEST_CASE("cli: --help lists every noun with a description") {
  auto r = run_kiln({"--help"});
  CHECK(r.exit_code == 0);
  for (auto noun : {"key", "image", "version"}) CHECK(r.out.find(noun) != std::string::npos);
}

TEST_CASE("cli: a noun's --help lists its verbs") {
  auto r = run_kiln({"key", "--help"});
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("generate") != std::string::npos);
  CHECK(r.out.find("show") != std::string::npos);
}

TEST_CASE("cli: version -o json names kiln, OpenSSL, libusb and libcurl") {
  auto r = run_kiln({"version", "-o", "json"});
  REQUIRE(r.exit_code == 0);
  auto v = json::parse(r.out);
  for (auto k : {"kiln", "openssl", "libusb", "libcurl"}) CHECK(v.contains(k));
  CHECK(v["openssl"].get<std::string>().starts_with("3."));
  CHECK(r.err.empty());
}

TEST_CASE("cli: --version prints the version only") {
  auto r = run_kiln({"--version"});
  CHECK(r.exit_code == 0);
  CHECK(r.out == KILN_VERSION "\n");
}

TEST_CASE("cli: unknown options and missing commands are usage errors (exit 2) on stderr") {
  auto r = run_kiln({"key", "show", "--bogus"});
  CHECK(r.exit_code == 2);
  CHECK(r.out.empty());
  CHECK(r.err.find("kiln: error:") != std::string::npos);
  CHECK(run_kiln({}).exit_code == 2);
  CHECK(run_kiln({"key"}).exit_code == 2);
}

TEST_CASE("cli: output format comes from flag, then KILN_OUTPUT, then config file") {
  TempDir dir;
  std::filesystem::create_directories(dir.path() / "kiln");
  std::ofstream(dir.path() / "kiln" / "config.toml") << "output = \"yaml\"\n";
  ProcessOptions with_config;
  with_config.env["XDG_CONFIG_HOME"] = dir.path().string();

  auto from_config = run_kiln({"version"}, with_config);
  CHECK(from_config.out.find("kiln: " KILN_VERSION) != std::string::npos);

  auto env_wins = with_config;
  env_wins.env["KILN_OUTPUT"] = "jsonl";
  auto from_env = run_kiln({"version"}, env_wins);
  CHECK(json::parse(from_env.out)["kiln"] == KILN_VERSION);

  auto from_flag = run_kiln({"version", "-o", "csv"}, env_wins);
  CHECK(from_flag.out.starts_with("kiln,openssl,libusb,libcurl\n"));
}

TEST_CASE("cli: --config names a file explicitly; a missing one is a usage error") {
  TempDir dir;
  auto cfg = dir.file("k.toml");
  std::ofstream(cfg) << "output = \"json\"\n";
  auto r = run_kiln({"--config", cfg, "version"});
  CHECK(json::parse(r.out)["kiln"] == KILN_VERSION);
  auto missing = run_kiln({"--config", dir.file("nope.toml"), "version"});
  CHECK(missing.exit_code == 2);
  CHECK(missing.err.find("nope.toml") != std::string::npos);
}

TEST_CASE("cli: every output format carries the same fields") {
  TempDir dir;
  auto key = dir.file("k.pem");
  REQUIRE(run_kiln({"key", "generate", "--type", "ecdsa-p256", "-o", key}).exit_code == 0);
  auto j = json::parse(run_kiln({"key", "show", key, "--output", "json"}).out);
  auto yaml = run_kiln({"key", "show", key, "--output", "yaml"}).out;
  auto csv = run_kiln({"key", "show", key, "--output", "csv"}).out;
  auto table = run_kiln({"key", "show", key}).out;
  for (auto& [k, v] : j.items()) {
    std::string value = v.is_string() ? v.get<std::string>() : v.dump();
    CHECK(yaml.find(k) != std::string::npos);
    CHECK(yaml.find(value) != std::string::npos);
    CHECK(csv.find(value) != std::string::npos);
    CHECK(table.find(value) != std::string::npos);
  }
}

TEST_CASE("cli: --quiet leaves stdout data intact and stderr empty on success") {
  TempDir dir;
  auto q = run_kiln({"-q", "key", "generate", "--type", "ed25519", "-o", dir.file("q.pem"), "--output", "json"});
  CHECK(q.exit_code == 0);
  CHECK(q.err.empty());
  CHECK(json::parse(q.out)["type"] == "ed25519");
}

TEST_CASE("cli: errors carry a hint and no OpenSSL queue unless --debug") {
  TempDir dir;
  auto bad = dir.file("bad.pem");
  std::ofstream(bad) << "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
  auto r = run_kiln({"key", "show", bad});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("hint:") != std::string::npos);
  CHECK(r.err.find("detail:") == std::string::npos);
  auto d = run_kiln({"--debug", "key", "show", bad});
  CHECK(d.exit_code == 1);
  CHECK(d.err.find("detail:") != std::string::npos);
}

TEST_CASE("cli: a mistyped command or option gets a 'did you mean' with exit 2") {
  auto noun = run_kiln({"imgae", "info", "x"});
  CHECK(noun.exit_code == 2);
  CHECK(noun.err.find("did you mean 'image'") != std::string::npos);
  auto verb = run_kiln({"key", "shwo", "k.pem"});
  CHECK(verb.exit_code == 2);
  CHECK(verb.err.find("did you mean 'show'") != std::string::npos);
  auto option = run_kiln({"key", "generate", "--tpye", "ed25519", "-o", "/tmp/never"});
  CHECK(option.exit_code == 2);
  CHECK(option.err.find("did you mean '--type'") != std::string::npos);
  CHECK(option.out.empty());
}

namespace {
// Runs kiln on a pseudo-terminal (util-linux `script`), so stdout is a terminal.
std::string on_terminal(const std::string& args, bool no_color) {
  kiln::test::ProcessOptions opts;
  opts.unset_env = {"NO_COLOR", "KILN_NO_COLOR", "KILN_OUTPUT"};
  opts.env["XDG_CONFIG_HOME"] = "/nonexistent-kiln-test-config";
  opts.env["TERM"] = "xterm";
  std::string command = std::string(KILN_BIN_DIR) + "/kiln " + args;
  if (no_color) command = "NO_COLOR=1 " + command;
  auto r = kiln::test::run_process("/usr/bin/script", {"-qec", command, "/dev/null"}, opts);
  return r.out;
}
}  // namespace

TEST_CASE("cli: color only on a terminal, and never with NO_COLOR or --no-color") {
  CHECK(on_terminal("help", false).find("\x1b[1m") != std::string::npos);
  CHECK(on_terminal("help", true).find("\x1b[") == std::string::npos);
  CHECK(on_terminal("--no-color help", false).find("\x1b[") == std::string::npos);
  kiln::test::ProcessOptions piped;
  piped.unset_env = {"NO_COLOR"};
  CHECK(kiln::test::run_process(kiln::test::bin_path("kiln"), {"help"}, piped).out.find("\x1b[") == std::string::npos);
}

// Every command that writes a file: refuses an existing one without --force (exit 7, the file
// untouched, and before any work), overwrites it with --force, and refuses a format name as the file
// (-o json inside these commands names a file, so it is a usage error, exit 2).
TEST_CASE("cli: output files: one spelling, --force to overwrite (exit 7 without), no format names as files") {
  TempDir dir;
  auto key = dir.file("k.pem");
  REQUIRE(run_kiln({"key", "generate", "-t", "ed25519", "-o", key}).exit_code == 0);
  std::ofstream(dir.file("app.bin"), std::ios::binary) << std::string(3000, 'a');
  std::vector<std::string> sign = {"image", "sign", "-k", key, "-v", "1.0.0", "-H", "0x200", "--pad-header", "-S",
                                   "0x10000", dir.file("app.bin")};
  auto sign_to = [&](const std::string& out, std::vector<std::string> extra = {}) {
    auto args = sign;
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(out);
    return run_kiln(args);
  };
  auto manifest_to = [&](const std::string& out, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"manifest",      "create", "--key",          key,          "--component",
                                     dir.file("img"), "--sequence", "3", "--vendor-domain", "example.com",
                                     "--class-name",  "app",    "-o",  out};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_kiln(args);
  };
  REQUIRE(sign_to(dir.file("img")).exit_code == 0);
  struct Case {
    std::string name;
    std::function<kiln::test::ProcessResult(const std::string&, std::vector<std::string>)> run;
  };
  std::vector<Case> cases = {
      {"image sign", sign_to},
      {"manifest create", manifest_to},
      {"key export-public",
       [&](const std::string& out, std::vector<std::string> extra) {
         std::vector<std::string> args = {"key", "export-public", key, "-o", out};
         args.insert(args.end(), extra.begin(), extra.end());
         return run_kiln(args);
       }},
      {"key generate",
       [&](const std::string& out, std::vector<std::string> extra) {
         std::vector<std::string> args = {"key", "generate", "-t", "ed25519", "-o", out};
         args.insert(args.end(), extra.begin(), extra.end());
         return run_kiln(args);
       }},
  };
  for (auto& c : cases) {
    CAPTURE(c.name);
    auto out = dir.file("existing-" + std::to_string(&c - cases.data()));
    std::ofstream(out) << "keep me";
    auto refused = c.run(out, {});
    CHECK(refused.exit_code == 7);
    CHECK(refused.err.find("already exists") != std::string::npos);
    CHECK(refused.err.find("--force") != std::string::npos);
    std::ifstream kept(out);
    std::string text((std::istreambuf_iterator<char>(kept)), std::istreambuf_iterator<char>());
    CHECK(text == "keep me");
    auto forced = c.run(out, {"--force"});
    INFO(forced.err);
    CHECK(forced.exit_code == 0);
    std::ifstream replaced(out);
    std::string now((std::istreambuf_iterator<char>(replaced)), std::istreambuf_iterator<char>());
    CHECK(now != "keep me");
  }
  // A format name where a file is expected is a usage error, and nothing named "json" appears.
  for (const char* format : {"json", "jsonl", "yaml", "csv", "table"}) {
    CAPTURE(format);
    ProcessOptions in_dir;
    in_dir.cwd = dir.path().string();
    auto r = run_kiln({"manifest", "create", "--key", key, "--component", dir.file("img"), "--sequence", "3",
                       "--vendor-domain", "example.com", "--class-name", "app", "-o", format},
                      in_dir);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("--output " + std::string(format)) != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(dir.file(format)));
  }
  // ./json is a file named json, and --output json inside the command is the format.
  auto named = manifest_to(dir.file("json"), {"--output", "json"});
  INFO(named.err);
  CHECK(named.exit_code == 0);
  CHECK(json::parse(named.out).is_object());
  CHECK(std::filesystem::exists(dir.file("json")));
}
