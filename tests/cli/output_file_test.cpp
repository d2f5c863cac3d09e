// Tests for cli/output_file: -o refuses a format name (through a real CLI11 parse), --force,
// check_overwrite on real files, directories, devices, FIFOs and "-", and output to -o FILE or stdout
// (binary refused on a real pseudo-terminal).
#include <doctest/doctest.h>
#include <pty.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include <filesystem>

#include "cli/output_file.hpp"
#include "core/bytes.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "cli/context.hpp"
#include "tests/support/captured_output.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;
using namespace kiln::cli;
using kiln::test::exit_code_of;

namespace {

struct Parsed {
  std::string path;
  bool force = false;
  std::string error;  // CLI11's message when the parse failed
};

Parsed parse(std::vector<std::string> args, const std::string& names = "-o,--out") {
  CLI::App app("test");
  Parsed out;
  add_output_file_option(&app, out.path, "Write the result to FILE", names);
  add_force_flag(&app, out.force);
  std::reverse(args.begin(), args.end());
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    out.error = e.what();
  }
  return out;
}

}  // namespace

TEST_CASE("output_file: -o takes a file name, and --force is a flag") {
  auto parsed = parse({"-o", "out.bin", "--force"});
  CHECK(parsed.error.empty());
  CHECK(parsed.path == "out.bin");
  CHECK(parsed.force);
  auto long_form = parse({"--out", "./json"});
  CHECK(long_form.error.empty());
  CHECK(long_form.path == "./json");
  CHECK_FALSE(long_form.force);
  auto alias = parse({"-O", "fw.bin"}, "-o,-O,--out");
  CHECK(alias.error.empty());
  CHECK(alias.path == "fw.bin");
}

TEST_CASE("output_file: a format name given to -o is refused, saying how to write either") {
  for (const char* format : {"table", "json", "jsonl", "yaml", "csv"}) {
    const std::string name = format;
    CAPTURE(name);
    auto parsed = parse({"-o", name});
    CHECK(parsed.error.find("'" + name + "' is an output format, but here -o names the file to write; use --output " +
                            name + " for the format, or -o ./" + name + " for a file named " + name) !=
          std::string::npos);
  }
  // Only the exact names: "json.out" and "JSON" are files.
  CHECK(parse({"-o", "json.out"}).error.empty());
  CHECK(parse({"-o", "JSON"}).error.empty());
  std::string value = "yaml";
  CHECK_FALSE(output_file_validator()(value).empty());
  value = "firmware.yaml";
  CHECK(output_file_validator()(value).empty());
}

TEST_CASE("output_file: check_overwrite refuses an existing file unless --force") {
  test::TempDir dir;
  const std::string path = dir.file("out.bin");
  CHECK_NOTHROW(check_overwrite(path, false));  // not there yet
  write_file_atomic(path, Bytes{1, 2, 3});
  CHECK_THROWS_WITH_AS(check_overwrite(path, false), (path + " already exists").c_str(), Error);
  CHECK(exit_code_of([&] { check_overwrite(path, false); }) == ExitCode::conflict);
  try {
    check_overwrite(path, false);
  } catch (const Error& e) {
    CHECK(e.hint() == "pass --force to overwrite it, or choose another path");
  }
  CHECK_NOTHROW(check_overwrite(path, true));
  CHECK(read_file(path) == Bytes{1, 2, 3});  // a check never touches the file
}

TEST_CASE("output_file: devices, FIFOs, \"-\" and no path are written in place and never overwritten") {
  test::TempDir dir;
  CHECK_NOTHROW(check_overwrite("/dev/null", false));
  CHECK_NOTHROW(check_overwrite("-", false));
  CHECK_NOTHROW(check_overwrite("", false));
  REQUIRE(::mkfifo(dir.file("fifo").c_str(), 0600) == 0);
  CHECK_NOTHROW(check_overwrite(dir.file("fifo"), false));
}

TEST_CASE("output_file: -o FILE or stdout; binary data is refused on a terminal, written to a pipe or file") {
  test::TempDir dir;
  const Bytes data = {0x30, 0x00, 0xff};
  // To a file: 0644, and an existing one needs --force.
  auto written = test::capture_output("table", [&](const Context& ctx) {
    check_file_or_stdout(ctx, dir.file("key.der"), false, "der");
    CHECK(write_file_or_stdout(ctx, dir.file("key.der"), data));
    CHECK(exit_code_of([&] { check_file_or_stdout(ctx, dir.file("key.der"), false, "der"); }) == ExitCode::conflict);
    check_file_or_stdout(ctx, dir.file("key.der"), true, "der");
  });
  CHECK(written.out.empty());
  CHECK(read_file(dir.file("key.der")) == data);
  struct stat st {};
  REQUIRE(::stat(dir.file("key.der").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0644);
  // To stdout when it is not a terminal: the bytes as they are.
  auto piped = test::capture_output("table", [&](const Context& ctx) {
    check_file_or_stdout(ctx, "", false, "der");
    CHECK_FALSE(write_file_or_stdout(ctx, "", data));
  });
  CHECK(piped.out == std::string("\x30\x00\xff", 3));
  // On a terminal: binary is refused before any work, text is not.
  int controller = -1, terminal = -1;
  REQUIRE(::openpty(&controller, &terminal, nullptr, nullptr, nullptr) == 0);
  std::fflush(stdout);
  int saved = ::dup(STDOUT_FILENO);
  ::dup2(terminal, STDOUT_FILENO);
  Context ctx;
  ctx.finalize();
  auto binary = exit_code_of([&] { check_file_or_stdout(ctx, "", false, "der"); });
  auto text = exit_code_of([&] { check_file_or_stdout(ctx, "", false); });
  ::dup2(saved, STDOUT_FILENO);
  for (int fd : {saved, terminal, controller}) ::close(fd);
  CHECK(binary == ExitCode::usage);
  CHECK(text == ExitCode::ok);
}
