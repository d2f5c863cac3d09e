// Tests for cli/app in-process: the global options and where their values come from (flag, config file),
// the config file's errors, "did you mean" after a parse error, and each error path's exit code and output.
#include <doctest/doctest.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "cli/app.hpp"
#include "cli/context.hpp"
#include "core/error.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;

namespace {

struct Ran {
  int code = -1;
  std::string err;
};

// cli::run with `args` after "kiln"; what it wrote to std::cerr. A config file is always named, so the
// user's own (~/.config/kiln/config.toml) never takes part.
Ran run(std::vector<std::string> args, const std::string& config = {}) {
  test::TempDir dir;
  std::vector<std::string> words = {"kiln"};
  if (config.empty()) {
    std::string empty = dir.file("empty.toml");
    std::fclose(std::fopen(empty.c_str(), "w"));
    words.insert(words.end(), {"--config", empty});
  } else {
    words.insert(words.end(), {"--config", config});
  }
  words.insert(words.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  // cli::run unsyncs the standard streams, which replaces their buffers: do it first, so the capture holds.
  std::ios::sync_with_stdio(false);
  std::ostringstream err;
  auto* old = std::cerr.rdbuf(err.rdbuf());
  Ran r;
  r.code = cli::run(static_cast<int>(argv.size()), argv.data());
  std::cerr.rdbuf(old);
  r.err = err.str();
  return r;
}

std::string write(const test::TempDir& dir, const std::string& name, const std::string& text) {
  auto path = dir.file(name);
  std::FILE* f = std::fopen(path.c_str(), "w");
  REQUIRE(f);
  std::fputs(text.c_str(), f);
  std::fclose(f);
  return path;
}

}  // namespace

TEST_CASE("cli app: a misspelt command or option is exit 2 with the closest name") {
  auto noun = run({"kye", "show"});
  CHECK(noun.code == 2);
  CHECK(noun.err.find("kiln: error: 'kye' is not a kiln command: did you mean 'key'?") != std::string::npos);
  CHECK(noun.err.find("hint: run 'kiln --help'") != std::string::npos);
  auto verb = run({"key", "shwo"});
  CHECK(verb.code == 2);
  CHECK(verb.err.find("'shwo' is not a kiln key command: did you mean 'show'?") != std::string::npos);
  auto option = run({"--verbsoe", "key", "show", "x.pem"});
  CHECK(option.code == 2);
  CHECK(option.err.find("unknown option '--verbsoe': did you mean '--verbose'?") != std::string::npos);
  // A global flag before the command takes no value: a known command's own error is reported, not the verb
  // read as a misspelt command.
  for (const char* flag : {"-q", "-v", "--debug", "--no-color"}) {
    auto required = run({flag, "image", "sign", "in.bin", "out.bin"});
    CHECK(required.code == 2);
    CHECK_MESSAGE(required.err.find("is not a kiln command") == std::string::npos, required.err);
    CHECK_MESSAGE(required.err.find("is required") != std::string::npos, required.err);
  }
  auto valued = run({"-o", "json", "key", "shwo"});
  CHECK(valued.err.find("'shwo' is not a kiln key command: did you mean 'show'?") != std::string::npos);
  // Nothing close: the parser's own message, still exit 2.
  auto far = run({"zzzzzzzzzz"});
  CHECK(far.code == 2);
  CHECK(far.err.find("kiln: error: ") == 0);
}

TEST_CASE("cli app: global option values are checked at parse time (exit 2)") {
  CHECK(run({"-o", "xml", "key", "show", "x.pem"}).code == 2);
  CHECK(run({"--stall-timeout", "0", "key", "show", "x.pem"}).code == 2);
  CHECK(run({}).code == 2);  // a command is required
}

TEST_CASE("cli app: the config file is checked: missing when named is exit 2, a value not allowed is exit 2") {
  test::TempDir dir;
  auto missing = run({"key", "show", "x.pem"}, dir.file("nope.toml"));
  CHECK(missing.code == 2);
  CHECK(missing.err.find("config file " + dir.file("nope.toml") + " does not exist") != std::string::npos);
  CHECK(missing.err.find("hint: fix --config / KILN_CONFIG") != std::string::npos);
  // A value the option does not allow is exit 2 naming the file, as the flag would be (not "a bug in kiln").
  auto bad = run({"key", "show", "x.pem"}, write(dir, "bad.toml", "output = [unterminated\n"));
  INFO(bad.err);
  CHECK(bad.code == 2);
  CHECK(bad.err.find("kiln: error: config file " + dir.file("bad.toml") + ": ") == 0);
  CHECK(bad.err.find("a bug in kiln") == std::string::npos);
  auto xml = run({"key", "show", "x.pem"}, write(dir, "xml.toml", "output = \"xml\"\n"));
  CHECK(xml.code == 2);
  CHECK(xml.err.find("a bug in kiln") == std::string::npos);
}

TEST_CASE("cli app: config values are defaults for global options; a flag overrides them") {
  cli::Context ctx;
  ctx.config["output"] = "json";
  ctx.config["stall-timeout"] = "42";
  auto app = cli::build_app(ctx);
  CHECK(app->get_option("--output")->get_default_str() == "json");
  CHECK(app->get_option("--stall-timeout")->get_default_str() == "42");
  // Every noun is there, and --version is known.
  auto nouns = app->get_subcommands([](const CLI::App*) { return true; });
  for (std::string noun : {"key", "image", "manifest", "board", "completion"})
    CHECK_MESSAGE(std::any_of(nouns.begin(), nouns.end(), [&](const CLI::App* a) { return a->get_name() == noun; }),
                  noun);
  CHECK(app->get_option_no_throw("--version") != nullptr);
}

TEST_CASE("cli app: a library error is its exit code with the message and hint, escaped for the terminal") {
  test::TempDir dir;
  auto r = run({"key", "show", dir.file("absent\x1b[2J.pem")});
  CHECK(r.code == static_cast<int>(ExitCode::not_found));
  CHECK(r.err.find("kiln: error: ") == 0);
  CHECK(r.err.find('\x1b') == std::string::npos);
}
