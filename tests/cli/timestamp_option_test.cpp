// Tests for cli/timestamp_option: ISO 8601 times pass, anything else is refused by the parser (a usage error)
// with a message naming the value.
#include <doctest/doctest.h>

#include <string>

#include <CLI/CLI.hpp>

#include "cli/timestamp_option.hpp"

TEST_CASE("timestamp option: ISO 8601 times pass, words and half dates do not") {
  auto check = kiln::cli::timestamp_validator();
  for (std::string good : {"2026-01-31T12:00:00Z", "2026-01-31"}) CHECK(check(good).empty());
  std::string word = "yesterday";
  CHECK(check(word) == "'yesterday' is not an ISO 8601 time such as 2026-01-31T12:00:00Z or 2026-01-31");
  std::string half = "2026-01";
  CHECK_FALSE(check(half).empty());

  CLI::App app;
  std::string since;
  app.add_option("--since", since)->check(kiln::cli::timestamp_validator());
  CHECK_THROWS_AS(app.parse(std::vector<std::string>{"yesterday", "--since"}), CLI::ValidationError);
  app.parse(std::vector<std::string>{"2026-01-31", "--since"});
  CHECK(since == "2026-01-31");
}
