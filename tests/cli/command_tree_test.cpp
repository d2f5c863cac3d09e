// Tests for cli/command_tree: a CLI11 tree described as plain data (names, value names, choices, what a value
// completes to, positionals, required options, subcommands), and "did you mean" suggestions.
#include <doctest/doctest.h>

#include <CLI/CLI.hpp>

#include "cli/command_tree.hpp"

using namespace kiln::cli;

namespace {

const OptionSpec& option(const CommandSpec& spec, const std::string& name) {
  for (const auto& o : spec.options)
    for (const auto& n : o.names)
      if (n == name) return o;
  for (const auto& o : spec.options)
    if (o.positional && o.value_name == name) return o;
  FAIL("no option " << name);
  throw std::logic_error("unreachable");
}

}  // namespace

TEST_CASE("command_tree: options, values, choices, positionals and subcommands as CLI11 has them") {
  CLI::App app("kiln: test tree", "kiln");
  bool force = false;
  std::string key, type, dir, board, in, out, label;
  app.add_flag("-f,--force", force, "Overwrite the output");
  auto* image = app.add_subcommand("image", "MCUboot images");
  auto* sign = image->add_subcommand("sign", "Sign an image");
  sign->add_option("IN", in, "Input image")->required();
  sign->add_option("--key,-k", key, "Signing KEYREF")->required();
  sign->add_option("--type", type, "Key type")->check(CLI::IsMember({"ed25519", "ecdsa-p256"}));
  sign->add_option("--state-dir", dir, "Where state goes")->check(CLI::ExistingDirectory);
  sign->add_option("--board", board, "Board address");
  sign->add_option("--label", label, "A label for the release");
  sign->add_option("--dest", out, "Output location")->check(CLI::NonexistentPath);

  CommandSpec root = describe(app);
  CHECK(root.name == "kiln");
  CHECK(root.description == "kiln: test tree");
  const auto& f = option(root, "--force");
  CHECK(f.names == std::vector<std::string>{"-f", "--force"});
  CHECK(f.value_name.empty());  // a flag takes no value
  CHECK(f.description == "Overwrite the output");
  CHECK_FALSE(f.takes_file);
  REQUIRE(root.subcommands.size() == 1);
  const CommandSpec& image_spec = root.subcommands[0];
  CHECK(image_spec.name == "image");
  REQUIRE(image_spec.subcommands.size() == 1);
  const CommandSpec& s = image_spec.subcommands[0];
  CHECK(s.name == "sign");
  CHECK(s.description == "Sign an image");

  const auto& positional = option(s, "IN");
  CHECK(positional.positional);
  CHECK(positional.names.empty());
  CHECK(positional.required);
  CHECK(positional.takes_file);  // named IN: a file

  const auto& k = option(s, "--key");
  CHECK(k.names == std::vector<std::string>{"-k", "--key"});
  CHECK(k.required);
  CHECK(k.value_name == "TEXT");
  CHECK(k.takes_file);  // --key names a KEYREF (a file or a URI)

  const auto& t = option(s, "--type");
  CHECK(t.choices == std::vector<std::string>{"ed25519", "ecdsa-p256"});
  CHECK_FALSE(t.takes_file);  // a choice is never a file

  const auto& d = option(s, "--state-dir");
  CHECK(d.takes_dir);
  CHECK_FALSE(d.takes_file);

  const auto& b = option(s, "--board");
  CHECK(b.takes_board);
  CHECK_FALSE(b.takes_file);

  CHECK_FALSE(option(s, "--label").takes_file);
  CHECK(option(s, "--dest").takes_file);  // CLI11 names the value PATH
}

TEST_CASE("command_tree: closest_match suggests a near word or a prefix, and nothing for a stranger") {
  std::vector<std::string> nouns = {"board", "image", "manifest", "device", "deployment"};
  CHECK(closest_match("imgae", nouns) == "image");
  CHECK(closest_match("bord", nouns) == "board");
  CHECK(closest_match("deploy", nouns) == "deployment");  // a prefix of two letters or more
  CHECK(closest_match("devise", nouns) == "device");
  CHECK(closest_match("zzzzzz", nouns).empty());
  CHECK(closest_match("x", nouns).empty());
  CHECK(closest_match("image", {}).empty());
}
