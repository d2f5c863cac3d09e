// Tests for transport/service_api without a service: where credentials live and which source wins, the
// client-certificate checks (each refusal's exit code), device-ID files, and the challenge signature.
#include <doctest/doctest.h>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "core/error.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/scoped_env.hpp"
#include "tests/support/temp_dir.hpp"
#include "transport/service_api.hpp"

using namespace kiln;
using namespace kiln::transport;

namespace {

std::string write(const test::TempDir& dir, const std::string& name, const std::string& text, int mode = 0600) {
  auto path = dir.file(name);
  std::ofstream(path) << text;
  ::chmod(path.c_str(), static_cast<mode_t>(mode));
  return path;
}

// A clean slate for one scope: credentials under `dir`, no KILN_* variables.
struct CleanEnvironment {
  explicit CleanEnvironment(const test::TempDir& dir) : config("XDG_CONFIG_HOME", dir.file("config").c_str()) {}
  test::ScopedEnv config;
  test::ScopedEnv service{"KILN_SERVICE", nullptr}, token{"KILN_TOKEN", nullptr}, ca_file{"KILN_CA_FILE", nullptr};
};

}  // namespace

TEST_CASE("service api: credentials live under XDG_CONFIG_HOME, else HOME, else nowhere (exit 1)") {
  test::TempDir dir;
  {
    test::ScopedEnv config("XDG_CONFIG_HOME", dir.file("xdg").c_str()), home("HOME", dir.file("home").c_str());
    CHECK(credentials_path() == std::filesystem::path(dir.file("xdg")) / "kiln" / "credentials");
  }
  {
    test::ScopedEnv config("XDG_CONFIG_HOME", nullptr), home("HOME", dir.file("home").c_str());
    CHECK(credentials_path() == std::filesystem::path(dir.file("home")) / ".config" / "kiln" / "credentials");
  }
  test::ScopedEnv config("XDG_CONFIG_HOME", nullptr), home("HOME", nullptr);
  CHECK(test::exit_code_of([] { credentials_path(); }) == ExitCode::failure);
}

TEST_CASE("service api: the credentials file, then the config's service, then KILN_* variables") {
  test::TempDir dir;
  CleanEnvironment env(dir);
  // Nothing known: not logged in (exit 6) with the ways to log in.
  try {
    load_credentials();
    FAIL("no credentials must be an error");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::authentication);
    CHECK(std::string(e.what()) == "not logged in to a kiln service");
    CHECK(e.hint().find("KILN_SERVICE and KILN_TOKEN") != std::string::npos);
  }
  // The config file names a service, but there is no token.
  CHECK(test::exit_code_of([] { load_credentials(std::string("https://configured:8443")); }) == ExitCode::authentication);

  std::filesystem::create_directories(dir.file("config/kiln"));
  write(dir, "config/kiln/credentials", R"({"service":"https://stored:8443","token":"stored-token","ca_file":"ca.pem"})");
  auto stored = load_credentials(std::string("https://configured:8443"));
  CHECK(stored.service == "https://stored:8443");  // the stored service wins over the config's
  CHECK(stored.token == "stored-token");
  CHECK(stored.ca_file == "ca.pem");
  {
    test::ScopedEnv service("KILN_SERVICE", "https://env:1"), token("KILN_TOKEN", "env-token"),
        ca_file("KILN_CA_FILE", "env.pem");
    auto c = load_credentials();
    CHECK(c.service == "https://env:1");
    CHECK(c.token == "env-token");
    CHECK(c.ca_file == "env.pem");
  }
  // A client certificate named for this call replaces the stored token.
  auto cert = write(dir, "station.pem", "certificate");
  auto key = write(dir, "station.key", "-----BEGIN PRIVATE KEY-----\n");
  auto station = load_credentials({}, {cert, key});
  CHECK(station.token.empty());
  CHECK(station.client.certificate == cert);
  // A damaged file says so (exit 1).
  write(dir, "config/kiln/credentials", "{not json");
  try {
    load_credentials();
    FAIL("a damaged credentials file must be an error");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::failure);
    CHECK(std::string(e.what()).find("is damaged") != std::string::npos);
    CHECK(e.hint() == "run kiln login again");
  }
}

TEST_CASE("service api: a client certificate needs both files, a PEM key only its owner reads, unencrypted") {
  test::TempDir dir;
  auto cert = write(dir, "c.pem", "certificate");
  auto key = write(dir, "k.pem", "-----BEGIN PRIVATE KEY-----\n");
  CHECK_NOTHROW(check_client_certificate({cert, key}));
  CHECK(test::exit_code_of([&] { check_client_certificate({cert, ""}); }) == ExitCode::usage);
  CHECK(test::exit_code_of([&] { check_client_certificate({"", key}); }) == ExitCode::usage);
  CHECK(test::exit_code_of([&] { check_client_certificate({cert, "pkcs11:token=x;object=y"}); }) == ExitCode::usage);
  CHECK(test::exit_code_of([&] { check_client_certificate({dir.file("nope.pem"), key}); }) == ExitCode::not_found);
  auto shared = write(dir, "shared.pem", "-----BEGIN PRIVATE KEY-----\n", 0640);
  try {
    check_client_certificate({cert, shared});
    FAIL("a group-readable key must be refused");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::authentication);
    CHECK(std::string(e.what()).find("(mode 640)") != std::string::npos);
    CHECK(e.hint() == "chmod 600 " + shared);
  }
  auto encrypted = write(dir, "enc.pem", "-----BEGIN ENCRYPTED PRIVATE KEY-----\n");
  CHECK(test::exit_code_of([&] { check_client_certificate({cert, encrypted}); }) == ExitCode::usage);
}

TEST_CASE("service api: device IDs from a file: plain or JSON lines, comments, trailer, duplicates, refusals") {
  auto ids = parse_device_ids("# fleet\n\n  dev-1  \r\n{\"uid\":\"dev-2\",\"product\":\"Thermo\"}\n{\"id\":\"dev-3\"}\n"
                              "dev-1\n{\"bundle_signature\":\"abc\"}\n",
                              "ids.txt");
  CHECK(ids == std::vector<std::string>{"dev-1", "dev-2", "dev-3"});
  CHECK(parse_device_ids("", "empty").empty());
  auto refused = [](const std::string& text, const std::string& message) {
    try {
      parse_device_ids(text, "ids.txt");
      FAIL("accepted: " << text);
    } catch (const Error& e) {
      CHECK(e.code() == ExitCode::failure);
      CHECK_MESSAGE(std::string(e.what()).find(message) != std::string::npos, e.what());
    }
  };
  refused("dev-1\ndev-2 dev-3\n", "ids.txt line 2: one device UID per line, got 'dev-2 dev-3'");
  refused("dev-1,dev-2\n", "line 1: one device UID per line");
  refused("{\"name\":\"x\"}\n", "line 1: a JSON line needs a \"uid\" or \"id\" string");
  refused("{\"uid\":7}\n", "a JSON line needs");
  refused("../etc/passwd\n", "line 1: a device UID holds up to 128 letters");
  refused(std::string(129, 'a') + "\n", "a device UID holds up to 128");

  test::TempDir dir;
  write(dir, "ids.txt", "dev-9\n");
  CHECK(read_device_ids(dir.file("ids.txt")) == std::vector<std::string>{"dev-9"});
  CHECK(test::exit_code_of([&] { read_device_ids(dir.file("missing.txt")); }) != ExitCode::ok);
}
