// Tests for cli/completion over a small hand-made command tree: each shell's tables, options inherited and
// shadowed, hidden helpers left out, quoting, and the bash script run by bash itself.
#include <doctest/doctest.h>

#include <string>

#include "cli/command_tree.hpp"
#include "cli/completion.hpp"
#include "core/error.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;
using kiln::cli::CommandSpec;
using kiln::cli::OptionSpec;

namespace {

OptionSpec option(std::vector<std::string> names, std::string value_name, std::string description = "an option") {
  OptionSpec o;
  o.names = std::move(names);
  o.value_name = std::move(value_name);
  o.description = std::move(description);
  return o;
}

// kiln [-o FORMAT] [-v] {key {generate [-o FILE] [--type T] NAME, list}, board {upload BOARD}, __complete}
CommandSpec tree() {
  CommandSpec root{"kiln", "the root", {}, {}};
  auto format = option({"-o", "--output"}, "FORMAT", "output format");
  format.choices = {"text", "json"};
  root.options.push_back(format);
  root.options.push_back(option({"-v", "--verbose"}, "", "say more"));

  CommandSpec generate{"generate", "make a key, it's new", {}, {}};
  auto out = option({"-o", "--out"}, "FILE", "where it goes");
  out.takes_file = true;
  generate.options.push_back(out);
  auto type = option({"--type"}, "T", "key type");
  type.choices = {"ec-p256", "ed25519"};
  generate.options.push_back(type);
  auto name = option({"NAME"}, "NAME");
  name.positional = true;
  generate.options.push_back(name);
  CommandSpec key{"key", "keys", {}, {generate, CommandSpec{"list", "list keys", {}, {}}}};

  CommandSpec upload{"upload", "upload an image", {}, {}};
  auto board = option({"--board"}, "BOARD");
  board.takes_board = true;
  upload.options.push_back(board);
  CommandSpec board_noun{"board", "boards", {}, {upload}};
  root.subcommands = {key, board_noun, CommandSpec{"__complete", "hidden", {}, {}}};
  return root;
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

void write_script(const std::string& path, const std::string& script) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  REQUIRE(f);
  std::fwrite(script.data(), 1, script.size(), f);
  std::fclose(f);
}

// What bash's programmable completion offers after `words` (the last one being completed).
std::string bash_offers(const std::string& script, const std::string& words) {
  test::TempDir dir;
  std::string path = dir.file("kiln.bash");
  write_script(path, script);
  auto r = test::run_process("/bin/bash", {"-c", "source " + path + "; COMP_WORDS=(" + words +
                                                     "); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _kiln; "
                                                     "printf '%s\\n' \"${COMPREPLY[@]}\" | sort | tr '\\n' ' '"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return r.out;
}

// What fish offers for `line` (the candidates without their descriptions, sorted, each followed by a space).
std::string fish_offers(const std::string& script, const std::string& line) {
  test::TempDir dir;
  std::string path = dir.file("kiln.fish");
  write_script(path, script);
  auto r = test::run_process("/usr/bin/fish", {"--no-config", "-c", "source " + path + "; complete -C '" + line +
                                                                        "' | cut -f1 | sort | tr '\\n' ' '"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return r.out;
}

std::size_t occurrences(const std::string& text, const std::string& part) {
  std::size_t n = 0;
  for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("completion: an unknown shell is a usage error naming the three") {
  try {
    cli::completion_script(tree(), "powershell");
    FAIL("powershell has no completion");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::usage);
    CHECK(std::string(e.what()) == "no completion for shell 'powershell'");
    CHECK(e.hint() == "use bash, zsh or fish");
  }
}

TEST_CASE("completion: bash tables hold every visible level, inherited options, and a level's own -o first") {
  auto bash = cli::completion_script(tree(), "bash");
  CHECK(has(bash, "complete -F _kiln kiln"));
  CHECK(has(bash, "['.']='key board'"));  // no hidden __complete
  CHECK_FALSE(has(bash, "__complete'"));
  CHECK(has(bash, "['key']='generate list'"));
  // Global options reach nested levels; generate's -o (a file) shadows the global -o (a format).
  CHECK(has(bash, "['key list']='-o --output -v --verbose'"));
  CHECK(has(bash, "['key generate']='-v --verbose -o --out --type'"));
  CHECK(has(bash, "['key generate|-o']='file'"));
  CHECK(has(bash, "['key list|-o']='choice:text json'"));
  CHECK(has(bash, "['key generate|--type']='choice:ec-p256 ed25519'"));
  CHECK(has(bash, "['board upload|--board']='board'"));
  CHECK_FALSE(has(bash, "|-v]"));  // a flag takes no value
  CHECK(has(bash, "['key generate']='file'"));  // the positional NAME completes files
}

TEST_CASE("completion: the bash script completes subcommands, options and choices when bash runs it") {
  auto bash = cli::completion_script(tree(), "bash");
  CHECK(bash_offers(bash, "kiln ''") == "board key ");
  CHECK(bash_offers(bash, "kiln k") == "key ");
  CHECK(bash_offers(bash, "kiln key g") == "generate ");
  CHECK(bash_offers(bash, "kiln -o json key ''") == "generate list ");  // -o's value is skipped
  CHECK(bash_offers(bash, "kiln key generate --t") == "--type ");
  CHECK(bash_offers(bash, "kiln key generate --type e") == "ec-p256 ed25519 ");
  CHECK(bash_offers(bash, "kiln key list -o j") == "json ");
}

TEST_CASE("completion: zsh and fish name the same commands and options, quoted for their shell") {
  auto zsh = cli::completion_script(tree(), "zsh");
  CHECK(has(zsh, "kiln"));
  CHECK(has(zsh, "generate"));
  CHECK(has(zsh, "--type"));
  CHECK_FALSE(has(zsh, "__complete:"));
  auto fish = cli::completion_script(tree(), "fish");
  CHECK(has(fish, "complete -c kiln -e"));
  CHECK(has(fish, "'generate' 'make a key, it\\'s new'"));  // fish escapes the quote
  CHECK(has(fish, "-a 'ec-p256 ed25519'"));
  CHECK(has(fish, "kiln __complete board"));
  CHECK_FALSE(has(fish, "'__complete'"));
}

TEST_CASE("completion: fish declares each option once, at its level, and fish hands it down to the levels below") {
  auto fish = cli::completion_script(tree(), "fish");
  CHECK(occurrences(fish, "-l verbose") == 1);
  CHECK(occurrences(fish, "-l output") == 1);
  // The global -o stops where generate's own -o (a file) shadows it.
  CHECK(has(fish, "-n '__kiln_in \\'.\\' -- \\'key generate\\'' -s o -l output"));
  CHECK(fish_offers(fish, "kiln ") == "board key ");
  CHECK(fish_offers(fish, "kiln -o json key ") == "generate list ");  // -o's value is skipped
  CHECK(fish_offers(fish, "kiln key list --") == "--output --verbose ");
  CHECK(fish_offers(fish, "kiln key generate --") == "--out --type --verbose ");
  CHECK(fish_offers(fish, "kiln key list -o j") == "json ");
  CHECK(fish_offers(fish, "kiln key generate --type e") == "ec-p256 ed25519 ");
}
