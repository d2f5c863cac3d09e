// Tests for cli/context: global options resolved into the output format and terminal facts, data rendered to stdout
// and messages to stderr as --quiet, --verbose and --debug say (escaped for the terminal), never a prompt without a
// terminal, config values, and secrets read from a file or a variable, never from the command line.
#include <doctest/doctest.h>

#include <CLI/CLI.hpp>

#include "cli/context.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "tests/support/cli_context.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/scoped_env.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;
using namespace kiln::cli;

TEST_CASE("context: finalize resolves the format and what is a terminal; an unknown format is a usage error") {
  Context ctx;
  ctx.global.output = "jsonl";
  test::finalize_detached(ctx);
  CHECK(ctx.format() == OutputFormat::jsonl);
  CHECK_FALSE(ctx.color());  // never colour into a file or a pipe
  CHECK_FALSE(ctx.stdout_is_terminal());
  CHECK_FALSE(ctx.stdin_is_terminal());
  CHECK_FALSE(ctx.stderr_is_terminal());

  Context live;
  test::finalize_detached(live, true);
  CHECK(live.format() == OutputFormat::table);
  CHECK(live.stderr_is_terminal());
  CHECK_FALSE(live.stdout_is_terminal());

  Context wrong;
  wrong.global.output = "xml";
  CHECK(test::exit_code_of([&] { test::finalize_detached(wrong); }) == ExitCode::usage);
}

TEST_CASE("context: data goes to stdout in the chosen format, records line by line") {
  Context ctx;
  ctx.global.output = "json";
  test::finalize_detached(ctx);
  {
    test::CapturedStream out(std::cout);
    ctx.render(Json{{"uid", "0a1b"}, {"ok", true}});
    CHECK(out.text() == "{\n  \"uid\": \"0a1b\",\n  \"ok\": true\n}\n");
  }
  ctx.global.output = "jsonl";
  test::finalize_detached(ctx);
  {
    test::CapturedStream out(std::cout);
    auto records = ctx.records();
    records->add(Json{{"n", 1}});
    CHECK(out.text() == "{\"n\":1}\n");  // each record as it comes, not at the end
    records->add(Json{{"n", 2}});
    records->finish();
    CHECK(out.text() == "{\"n\":1}\n{\"n\":2}\n");
  }
  {
    test::CapturedStream out(std::cout);
    ctx.write_output(std::string("raw\0bytes", 9));
    CHECK(out.text() == std::string("raw\0bytes", 9));
  }
}

TEST_CASE("context: info, detail, debug and warnings on stderr as the flags say, escaped for the terminal") {
  Context ctx;
  test::finalize_detached(ctx);
  auto said = [&](const std::function<void()>& speak) {
    test::CapturedStream err(std::cerr);
    test::CapturedStream out(std::cout);
    speak();
    CHECK(out.text().empty());  // stdout is data only
    return err.text();
  };
  CHECK(said([&] { ctx.info("signed fw.bin"); }) == "signed fw.bin\n");
  CHECK(said([&] { ctx.detail("step 1"); }).empty());
  CHECK(said([&] { ctx.debug("raw"); }).empty());
  CHECK(said([&] { ctx.warn("board name \x1b[2J\nnext line"); }) == "kiln: warning: board name \\x1b[2J\nnext line\n");
  ctx.global.verbose = true;
  ctx.global.debug = true;
  CHECK(said([&] { ctx.detail("step 1"); }) == "step 1\n");
  CHECK(said([&] { ctx.debug("raw"); }) == "debug: raw\n");
  ctx.global.quiet = true;
  CHECK(said([&] { ctx.info("signed fw.bin"); }).empty());
  CHECK(said([&] { ctx.detail("step 1"); }).empty());
  CHECK(said([&] { ctx.warn("still said"); }) == "kiln: warning: still said\n");  // --quiet never hides a warning
  // Without a terminal on stdin nothing is asked and the answer is no.
  CHECK(said([&] { CHECK_FALSE(ctx.confirm("Erase the board?")); }).empty());
}

TEST_CASE("context: config values by key") {
  Context ctx;
  ctx.config = {{"service", "https://127.0.0.1:8443"}, {"factory.station", "line-3"}};
  CHECK(ctx.config_value("factory.station") == std::optional<std::string>("line-3"));
  CHECK_FALSE(ctx.config_value("station"));
}

TEST_CASE("context: secrets come from a file or a variable, trimmed of the line end; never both, never empty") {
  test::TempDir dir;
  write_file_atomic(dir.file("pass"), as_bytes("correct horse\r\n"), 0600);
  CHECK(read_secret({dir.file("pass"), ""}, "passphrase") == std::optional<std::string>("correct horse"));
  CHECK_FALSE(read_secret({}, "passphrase"));
  {
    test::ScopedEnv secret("KILN_TEST_SECRET", "from env");
    CHECK(read_secret({"", "KILN_TEST_SECRET"}, "PIN") == std::optional<std::string>("from env"));
    CHECK_THROWS_WITH_AS(read_secret({dir.file("pass"), "KILN_TEST_SECRET"}, "PIN"),
                         "give the PIN either in a file or in a variable, not both", Error);
  }
  test::ScopedEnv unset("KILN_TEST_SECRET", nullptr);
  CHECK_THROWS_WITH_AS(read_secret({"", "KILN_TEST_SECRET"}, "PIN"),
                       "environment variable KILN_TEST_SECRET (the PIN) is not set", Error);
  write_file_atomic(dir.file("empty"), as_bytes("\n"), 0600);
  CHECK_THROWS_WITH_AS(read_secret({dir.file("empty"), ""}, "passphrase"), "the passphrase is empty", Error);
  CHECK(test::exit_code_of([&] { read_secret({dir.file("absent"), ""}, "passphrase"); }) == ExitCode::not_found);
}

TEST_CASE("context: key options carry the passphrase, the PKCS#11 module and KILN_PKCS11_PIN") {
  test::TempDir dir;
  write_file_atomic(dir.file("pass"), as_bytes("pw\n"), 0600);
  Context ctx;
  ctx.global.pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so";
  auto options = [&] {
    test::ScopedEnv pin("KILN_PKCS11_PIN", "1234");
    return ctx.key_options({dir.file("pass"), ""});
  }();
  CHECK(options.passphrase == std::optional<std::string>("pw"));
  CHECK(options.pkcs11_module == std::optional<std::string>("/usr/lib/softhsm/libsofthsm2.so"));
  CHECK(options.pkcs11_pin == std::optional<std::string>("1234"));
  auto bare = Context().key_options();
  CHECK_FALSE(bare.passphrase);
  CHECK_FALSE(bare.pkcs11_pin);
}

TEST_CASE("context: --passphrase-file must exist; --passphrase-env names a variable") {
  test::TempDir dir;
  write_file_atomic(dir.file("pass"), as_bytes("pw"), 0600);
  CLI::App app;
  SecretSource source;
  add_passphrase_options(&app, source);
  app.parse(std::vector<std::string>{"VAR", "--passphrase-env", dir.file("pass"), "--passphrase-file"});  // reversed
  CHECK(source.file == dir.file("pass"));
  CHECK(source.env == "VAR");
  CHECK(source.given());
  SecretSource missing;
  CLI::App other;
  add_passphrase_options(&other, missing);
  CHECK_THROWS_AS(other.parse(std::vector<std::string>{dir.file("absent"), "--passphrase-file"}), CLI::ValidationError);
}
