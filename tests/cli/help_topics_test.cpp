// Tests for cli/help_topics: the topics `kiln help` lists, an unknown topic refused with a suggestion and the list,
// and the exit-codes text generated from the ExitCode table.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "cli/help_topics.hpp"
#include "core/error.hpp"

using namespace kiln;
using namespace kiln::cli;

TEST_CASE("help_topics: the topics, each with a summary and a text") {
  std::vector<std::string> names;
  for (const auto& topic : help_topics()) {
    names.emplace_back(topic.name);
    CHECK(std::string(topic.summary).size() > 10);
    if (names.back() != "exit-codes") CHECK(std::string(topic.text).size() > 100);
  }
  CHECK(names == std::vector<std::string>{"keys", "images", "manifests", "boards", "factory", "output", "rollouts",
                                          "exit-codes"});
  CHECK(std::string(find_help_topic("keys").text).find("pkcs11:token=") != std::string::npos);
  CHECK(&find_help_topic("rollouts") == &help_topics()[6]);
}

TEST_CASE("help_topics: an unknown topic is a usage error with the closest topic and the list") {
  try {
    find_help_topic("imgaes");
    FAIL("an unknown topic was found");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::usage);
    CHECK(std::string(e.what()) == "no help topic 'imgaes': did you mean 'images'?");
    CHECK(e.hint() == "topics: keys, images, manifests, boards, factory, output, rollouts, exit-codes");
  }
  CHECK_THROWS_WITH_AS(find_help_topic("quantum"), "no help topic 'quantum'", Error);
}

TEST_CASE("help_topics: the exit-codes text has one aligned line per code, from the table") {
  auto text = exit_codes_text();
  CHECK(text.starts_with("kiln's exit codes are stable; scripts may rely on them (docs/exit-codes.md).\n\n"));
  CHECK(text.find(std::string("    0  ok                   ") + exit_code_description(ExitCode::ok) + "\n") !=
        std::string::npos);
  CHECK(text.find(std::string("    3  verification-failed  ") + exit_code_description(ExitCode::verification_failed) +
                  "\n") != std::string::npos);
  CHECK(text.find(std::string("  130  interrupted          ") + exit_code_description(ExitCode::interrupted) + "\n") !=
        std::string::npos);
  CHECK(std::count(text.begin(), text.end(), '\n') == 2 + 11);
}
