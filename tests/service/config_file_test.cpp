// kiln-service's config file: known keys with the right types pass; anything else names file, line and key.
#include <doctest/doctest.h>

#include <fstream>
#include <vector>

#include "core/error.hpp"
#include "service/config_file.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;
using service::ConfigKey;
using service::ConfigType;

namespace {

const std::vector<ConfigKey> keys = {
    {"dir", ConfigType::string}, {"threads", ConfigType::integer}, {"body-timeout", ConfigType::number}};

std::string error_of(const std::string& toml, ExitCode* code = nullptr) {
  test::TempDir dir;
  std::ofstream(dir.file("config.toml")) << toml;
  try {
    service::read_config_file(dir.file("config.toml"), keys);
  } catch (const Error& e) {
    if (code) *code = e.code();
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("service config: known keys of the right type are read, with their lines") {
  test::TempDir dir;
  std::ofstream(dir.file("config.toml")) << "# comment\ndir = \"/var/lib/kiln-service\"\n\nthreads = 16\nbody-timeout = 2.5\n";
  auto values = service::read_config_file(dir.file("config.toml"), keys);
  CHECK(values.at("dir").text == "/var/lib/kiln-service");
  CHECK(values.at("dir").line == 2);
  CHECK(values.at("threads").text == "16");
  CHECK(values.at("threads").line == 4);
  CHECK(values.at("body-timeout").text == "2.5");
  // An integer is a number too.
  std::ofstream(dir.file("int.toml")) << "body-timeout = 30\n";
  CHECK(service::read_config_file(dir.file("int.toml"), keys).at("body-timeout").text == "30");
}

TEST_CASE("service config: an unknown key names the file, the line and the key (exit 2)") {
  ExitCode code{};
  auto message = error_of("dir = \"/x\"\n\nthread = 4\n", &code);
  CHECK(code == ExitCode::usage);
  CHECK(message.find("config.toml:3: unknown key 'thread'") != std::string::npos);
}

TEST_CASE("service config: a wrong type names the file, the line, the key and both types") {
  CHECK(error_of("threads = \"8\"\n").find("config.toml:1: 'threads' must be an integer, not a string") !=
        std::string::npos);
  CHECK(error_of("dir = 3\n").find("config.toml:1: 'dir' must be a string, not an integer") != std::string::npos);
  CHECK(error_of("threads = 2.5\n").find("'threads' must be an integer, not a float") != std::string::npos);
  CHECK(error_of("[dir]\nx = 1\n").find("config.toml:1: 'dir' must be a string, not a table") != std::string::npos);
  CHECK(error_of("[tls]\nx = 1\n").find("unknown key 'tls'") != std::string::npos);
}

TEST_CASE("service config: a syntax error names the file and the line") {
  ExitCode code{};
  auto message = error_of("dir = \"/x\"\nthreads = = 3\n", &code);
  CHECK(code == ExitCode::usage);
  CHECK(message.find("config.toml:2: not valid TOML") != std::string::npos);
  CHECK(error_of("dir = \"a\"\ndir = \"b\"\n").find("config.toml:2:") != std::string::npos);
}
