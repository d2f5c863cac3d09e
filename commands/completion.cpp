// kiln completion: print a shell completion script generated from the live command tree.
#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/command_tree.hpp"
#include "cli/completion.hpp"
#include "cli/context.hpp"
#include "commands/commands.hpp"

namespace kiln::commands {

void add_completion(CLI::App& app, cli::Context& /*ctx*/) {
  auto shell = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("completion", "Print a shell completion script (bash, zsh, fish)");
  cmd->add_option("SHELL", *shell, "bash, zsh or fish")->required()->check(CLI::IsMember({"bash", "zsh", "fish"}));
  cmd->callback([&app, shell] { std::cout << cli::completion_script(cli::describe(app), *shell); });

  // Dynamic values for completion scripts (boards, groups, products); prints one per line.
  auto kind = std::make_shared<std::string>();
  auto* values = app.add_subcommand("__complete", "");
  values->group("");  // hidden from help
  values->add_option("KIND", *kind)->required();
  values->callback([kind] {
    // Filled in by the nouns that know these values (board list, service groups/products).
    (void)kind;
  });
}

}  // namespace kiln::commands
