// Shell completions tested in the real shells (bash + bash-completion, fish, zsh via zpty), and
// the checked-in completions/ kept in step with the live command tree.
#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "core/files.hpp"
#include "tests/support/process.hpp"
#include "tests/support/scoped_env.hpp"
#include "tests/support/temp_dir.hpp"

using kiln::test::run_kiln;
using kiln::test::run_process;
using kiln::test::TempDir;

namespace {

std::string source_dir() { return KILN_SOURCE_DIR; }

std::set<std::string> lines_of(const std::string& text) {
  std::set<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.insert(line.substr(0, line.find('\t')));
  return out;
}

std::string script_for(const std::string& shell, const TempDir& dir, const std::string& file) {
  auto r = run_kiln({"completion", shell});
  REQUIRE(r.exit_code == 0);
  std::ofstream(dir.file(file)) << r.out;
  return dir.file(file);
}

// COMP_WORDS from a command line; a trailing space adds an empty word, as bash does.
std::set<std::string> bash_complete(const std::string& script, const std::string& line, const std::string& cwd = "") {
  std::string words;
  std::istringstream in(line);
  std::string w;
  int count = 0;
  while (in >> w) {
    words += "'" + w + "' ";
    ++count;
  }
  if (line.ends_with(" ")) {
    words += "'' ";
    ++count;
  }
  std::string cmd = "source /usr/share/bash-completion/bash_completion; source '" + script + "'; " +
                    (cwd.empty() ? "" : "cd '" + cwd + "'; ") + "COMP_WORDS=(" + words + "); COMP_CWORD=" +
                    std::to_string(count - 1) + "; COMP_LINE='" + line + "'; COMP_POINT=${#COMP_LINE}; " +
                    "$(complete -p kiln | sed -E 's/.*-F ([^ ]+).*/\\1/'); printf '%s\\n' \"${COMPREPLY[@]}\"";
  kiln::test::ProcessOptions opts;
  opts.env["PATH"] = std::string(KILN_BIN_DIR) + ":/usr/bin:/bin";
  auto r = run_process("/bin/bash", {"-c", cmd}, opts);
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  return lines_of(r.out);
}

std::set<std::string> fish_complete(const std::string& script, const std::string& line) {
  kiln::test::ProcessOptions opts;
  opts.env["PATH"] = std::string(KILN_BIN_DIR) + ":/usr/bin:/bin";
  auto r = run_process("/usr/bin/fish", {"--no-config", "-c", "source '" + script + "'; complete -C '" + line + "'"}, opts);
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  return lines_of(r.out);
}

std::set<std::string> zsh_complete_once(const TempDir& dir, const std::string& line) {
  kiln::test::ProcessOptions opts;
  opts.timeout_seconds = 60;
  auto r = run_process("/usr/bin/zsh",
                       {"-f", source_dir() + "/tests/e2e/data/zsh_complete.zsh", dir.path().string(), KILN_BIN_DIR, line},
                       opts);
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  return lines_of(r.out);
}

// The pty session is timing-sensitive on a loaded machine: a short read is retried, a wrong
// answer is not hidden (the last attempt's result is returned either way).
std::set<std::string> zsh_complete(const TempDir& dir, const std::string& line, std::size_t at_least) {
  std::set<std::string> result;
  for (int attempt = 0; attempt < 3; ++attempt) {
    result = zsh_complete_once(dir, line);
    if (result.size() >= at_least) break;
  }
  return result;
}

}  // namespace

TEST_CASE("completion: the checked-in scripts match the live command tree") {
  for (auto entry : {std::pair{"bash", "kiln.bash"}, {"zsh", "_kiln"}, {"fish", "kiln.fish"}}) {
    std::string shell = entry.first, file = entry.second;  // named copies: clang 14's lambdas cannot capture bindings
    auto r = run_kiln({"completion", shell});
    REQUIRE(r.exit_code == 0);
    auto checked_in = kiln::read_text_file(source_dir() + "/completions/" + file);
    CHECK_MESSAGE(r.out == checked_in, "completions/" << file << " is stale: run scripts/generate.sh");
  }
}

TEST_CASE("completion: an unknown shell is a usage error") { CHECK(run_kiln({"completion", "tcsh"}).exit_code == 2); }

TEST_CASE("completion: bash completes nouns, verbs, options, enum values and files") {
  TempDir dir;
  auto script = script_for("bash", dir, "kiln.bash");
  auto nouns = bash_complete(script, "kiln ");
  CHECK(nouns.count("key"));
  CHECK(nouns.count("image"));
  CHECK(bash_complete(script, "kiln key ") == std::set<std::string>{"export-public", "generate", "show", "sign-digest"});
  CHECK(bash_complete(script, "kiln -o json key sh") == std::set<std::string>{"show"});
  auto types = bash_complete(script, "kiln key generate --type ");
  CHECK(types.count("ed25519"));
  CHECK(types.size() == 5);
  CHECK(bash_complete(script, "kiln --output js") == std::set<std::string>{"json", "jsonl"});
  auto opts = bash_complete(script, "kiln key generate --pa");
  CHECK(opts == std::set<std::string>{"--passphrase-env", "--passphrase-file"});
  std::ofstream(dir.file("device.pem")) << "x";
  CHECK(bash_complete(script, "kiln key show dev", dir.path().string()) == std::set<std::string>{"device.pem"});
}

TEST_CASE("completion: fish completes nested commands, options, enum values and files") {
  TempDir dir;
  auto script = script_for("fish", dir, "kiln.fish");
  CHECK(fish_complete(script, "kiln ke") == std::set<std::string>{"key"});
  CHECK(fish_complete(script, "kiln key ") == std::set<std::string>{"export-public", "generate", "show", "sign-digest"});
  CHECK(fish_complete(script, "kiln key generate --type ed").count("ed25519"));
  CHECK(fish_complete(script, "kiln -o y") == std::set<std::string>{"yaml"});
  std::ofstream(dir.file("station.pem")) << "x";
  CHECK(fish_complete(script, "kiln key show " + dir.file("sta")).count(dir.file("station.pem")));
}

TEST_CASE("completion: zsh completes in a real interactive shell") {
  TempDir dir;
  script_for("zsh", dir, "_kiln");
  CHECK(zsh_complete(dir, "kiln key ", 3) == std::set<std::string>{"export-public", "generate", "show", "sign-digest"});
  auto types = zsh_complete(dir, "kiln key generate --type ", 5);
  CHECK(types.count("ecdsa-p384"));
  CHECK(types.count("rsa-3072"));
  std::ofstream(dir.file("station.pem")) << "x";
  auto files = zsh_complete(dir, "kiln key show " + dir.file("sta"), 1);
  CHECK(files.count(dir.file("station.pem")) + files.count("station.pem") == 1);
}

#include "tests/support/emulator_process.hpp"
#include "tests/support/service_process.hpp"

TEST_CASE("completion: --board offers the attached boards' addresses and UIDs") {
  TempDir dir;
  auto boards = dir.path() / "boards";
  kiln::test::EmulatorProcess emu(boards.string(), 2);
  auto script = script_for("bash", dir, "kiln.bash");
  kiln::test::ProcessOptions opts;
  opts.env["KILN_EMU_DIR"] = boards.string();
  auto direct = run_kiln({"__complete", "board"}, opts);
  REQUIRE(direct.exit_code == 0);
  auto offered = lines_of(direct.out);
  for (auto& uid : emu.uids()) CHECK(offered.count(uid));
  CHECK(offered.size() == 4);  // emu:<socket> and the UID for each board
  // Through the bash script (it calls kiln from PATH with the same environment).
  kiln::test::ScopedEnv emu_dir("KILN_EMU_DIR", boards.c_str());
  CHECK(bash_complete(script, "kiln board info -b ") == offered);
}

TEST_CASE("completion: group and product names come from the service, cached for a minute") {
  TempDir dir;
  auto data = dir.path() / "svc";
  auto init = run_process(kiln::test::bin_path("kiln-service"), {"init", "--dir", data.string()});
  REQUIRE_MESSAGE(init.exit_code == 0, init.err);
  kiln::test::ProcessOptions opts;
  opts.env["XDG_CACHE_HOME"] = dir.file("cache");
  opts.env["KILN_CA_FILE"] = (data / "ca.pem").string();
  auto token = kiln::read_text_file(data / "admin.token");
  while (!token.empty() && token.back() == '\n') token.pop_back();
  opts.env["KILN_TOKEN"] = token;
  {
    kiln::test::ServiceProcess service(data);
    opts.env["KILN_SERVICE"] = service.url();
    REQUIRE(run_kiln({"product", "create", "Thermo"}, opts).exit_code == 0);
    auto products = lines_of(run_kiln({"__complete", "product"}, opts).out);
    CHECK(products == std::set<std::string>{"Thermo"});
    auto groups = lines_of(run_kiln({"__complete", "group"}, opts).out);
    CHECK(groups.count("Thermo/Development"));
    CHECK(groups.count("Thermo/Field Test"));
    CHECK(groups.count("Thermo/Production"));
  }
  // The service is gone: the cached answer is still offered, and nothing is printed on stderr.
  auto cached = run_kiln({"__complete", "group"}, opts);
  CHECK(cached.exit_code == 0);
  CHECK(cached.err.empty());
  CHECK(lines_of(cached.out).count("Thermo/Production"));
  // Without a cache and without a service, completion offers nothing and stays silent.
  opts.env["XDG_CACHE_HOME"] = dir.file("empty-cache");
  auto none = run_kiln({"__complete", "product"}, opts);
  CHECK(none.exit_code == 0);
  CHECK(none.out.empty());
  CHECK(none.err.empty());
}
