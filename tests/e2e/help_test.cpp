// kiln help topics and man pages: generated from kiln's own data, and kept in step with the repo.
#include <doctest/doctest.h>

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/files.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

using kiln::test::run_kiln;
using kiln::test::TempDir;

TEST_CASE("help: lists topics and explains each one") {
  auto list = run_kiln({"help"});
  REQUIRE(list.exit_code == 0);
  for (auto topic : {"keys", "images", "manifests", "boards", "factory", "output", "rollouts", "exit-codes"}) {
    CHECK(list.out.find(topic) != std::string::npos);
    auto r = run_kiln({"help", topic});
    CHECK(r.exit_code == 0);
    CHECK(r.out.size() > 200);
  }
}

TEST_CASE("help: exit-codes topic and docs/exit-codes.md cover every code") {
  auto text = run_kiln({"help", "exit-codes"}).out;
  auto doc = kiln::read_text_file(std::string(KILN_SOURCE_DIR) + "/docs/exit-codes.md");
  for (int code : {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 130}) {
    std::string name = kiln::exit_code_name(static_cast<kiln::ExitCode>(code));
    CHECK_MESSAGE(text.find(name) != std::string::npos, name);
    CHECK_MESSAGE(doc.find("| " + std::to_string(code) + " | " + name + " |") != std::string::npos,
                  "docs/exit-codes.md lacks " << code << " " << name);
  }
}

TEST_CASE("help: an unknown topic suggests the closest one") {
  auto r = run_kiln({"help", "manifest"});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("did you mean 'manifests'") != std::string::npos);
}

TEST_CASE("man: pages for kiln and every noun with verbs, identical to the checked-in man/") {
  TempDir dir;
  auto r = run_kiln({"man", "--dir", dir.path().string()});
  REQUIRE(r.exit_code == 0);
  std::set<std::string> generated, checked_in;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) generated.insert(e.path().filename().string());
  for (auto& e : std::filesystem::directory_iterator(std::string(KILN_SOURCE_DIR) + "/man"))
    if (auto name = e.path().filename().string(); !name.starts_with("kiln-service.") && !name.starts_with("kiln-board-emu."))
      checked_in.insert(name);
  CHECK(generated.count("kiln.1"));
  CHECK(generated.count("kiln-key.1"));
  CHECK_MESSAGE(generated == checked_in, "man/ is stale: run scripts/generate.sh");
  for (auto& name : generated) {
    auto fresh = kiln::read_text_file(dir.path() / name);
    CHECK(fresh.find(".TH") != std::string::npos);
    if (checked_in.count(name))
      CHECK_MESSAGE(fresh == kiln::read_text_file(std::string(KILN_SOURCE_DIR) + "/man/" + name),
                    "man/" << name << " is stale: run scripts/generate.sh");
  }
}

TEST_CASE("man: kiln-service(8) and kiln-board-emu(1) come from their own options, identical to man/") {
  if (!std::filesystem::exists(kiln::test::bin_path("kiln-service"))) return;
  struct Page {
    const char* program;
    const char* file;
    std::vector<std::string> words;  // options from the program's tree, and a README example
  };
  for (const Page& page :
       {Page{"kiln-service", "kiln-service.8",
             {".TH KILN\\-SERVICE 8", "\\-\\-if\\-missing", "\\-\\-tls\\-certificate", "\\-\\-max\\-threads", ".SH EXAMPLES",
              "kiln\\-service init \\-\\-dir ./svc", "SIGHUP", "NOTIFY_SOCKET"}},
        Page{"kiln-board-emu", "kiln-board-emu.1",
             {".TH KILN\\-BOARD\\-EMU 1", "\\-\\-check\\-in\\-interval", "\\-\\-fail\\-version", ".SH EXAMPLES",
              "kiln\\-board\\-emu \\-\\-dir /tmp/boards \\-\\-count 2"}}}) {
    auto r = kiln::test::run_process(kiln::test::bin_path(page.program), {"--man-page"});
    REQUIRE(r.exit_code == 0);
    for (auto& word : page.words) CHECK_MESSAGE(r.out.find(word) != std::string::npos, page.program << " lacks " << word);
    CHECK_MESSAGE(r.out == kiln::read_text_file(std::string(KILN_SOURCE_DIR) + "/man/" + page.file),
                  "man/" << page.file << " is stale: run scripts/generate.sh");
  }
}

TEST_CASE("man: each noun page has the README's examples for that noun") {
  TempDir dir;
  REQUIRE(run_kiln({"man", "--dir", dir.path().string()}).exit_code == 0);
  auto image = kiln::read_text_file(dir.path() / "kiln-image.1");
  CHECK(image.find(".SH EXAMPLES") != std::string::npos);
  CHECK(image.find("kiln image sign app.bin app.signed.bin \\-k signing.pem") != std::string::npos);
  CHECK(image.find("kiln key generate") == std::string::npos);
  for (auto noun : {"key", "image", "manifest", "board", "factory", "device", "deployment", "product"}) {
    auto page = kiln::read_text_file(dir.path() / (std::string("kiln-") + noun + ".1"));
    CHECK_MESSAGE(page.find(".SH EXAMPLES") != std::string::npos, "kiln-" << noun << ".1 has no EXAMPLES");
  }
}
