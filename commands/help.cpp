// kiln help TOPIC and kiln man: concept help and man pages, both from data kiln carries.
#include <CLI/CLI.hpp>
#include <filesystem>

#include "cli/command_tree.hpp"
#include "cli/context.hpp"
#include "cli/help_topics.hpp"
#include "cli/manpage.hpp"
#include "commands/commands.hpp"
#include "core/files.hpp"
#include "kiln/version.hpp"

namespace kiln::commands {

void add_help(CLI::App& app, cli::Context& ctx) {
  auto topic = std::make_shared<std::string>();
  auto* help = app.add_subcommand("help", "Explain a concept: keys, images, manifests, boards, factory, output, exit-codes");
  help->add_option("TOPIC", *topic, "Topic name; without one, list the topics");
  help->callback([&ctx, topic] {
    if (topic->empty()) {
      cli::Json rows = cli::Json::array();
      for (auto& t : cli::help_topics()) rows.push_back({{"topic", t.name}, {"summary", t.summary}});
      ctx.render(rows);
      return;
    }
    const auto& t = cli::find_help_topic(*topic);
    ctx.write_output(t.text ? std::string(t.text) : cli::exit_codes_text());
  });

  auto dir = std::make_shared<std::string>();
  auto* man = app.add_subcommand("man", "Write the man pages (kiln.1 and one per noun) into a directory");
  man->add_option("--dir", *dir, "Directory to write into")->required()->type_name("DIR");
  man->callback([&app, &ctx, dir] {
    std::filesystem::create_directories(*dir);
    cli::Json written = cli::Json::array();
    for (auto& [name, text] : cli::man_pages(cli::describe(app), KILN_RELEASE)) {
      write_file_atomic(std::filesystem::path(*dir) / name, as_bytes(text));
      written.push_back({{"page", name}, {"bytes", text.size()}});
    }
    ctx.render(written);
  });
}

}  // namespace kiln::commands
