// kiln completion: print a shell completion script generated from the live command tree, and
// `kiln __complete KIND` (hidden): the dynamic values those scripts offer (boards, groups, products).
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "cli/command_tree.hpp"
#include "cli/completion.hpp"
#include "cli/context.hpp"
#include "commands/board_session.hpp"
#include "commands/commands.hpp"
#include "commands/service_session.hpp"
#include "core/files.hpp"

namespace kiln::commands {
namespace {

namespace fs = std::filesystem;

fs::path cache_dir() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) return fs::path(xdg) / "kiln";
  if (const char* home = std::getenv("HOME"); home && *home) return fs::path(home) / ".cache" / "kiln";
  return {};
}

// Group and product names change rarely and asking the service costs a round trip per Tab, so
// answers are kept for a minute (per user, 0600, never the token).
constexpr auto cache_lifetime = std::chrono::seconds(60);

std::string service_names(const cli::Context& ctx, const std::string& kind) {
  fs::path cache = cache_dir();
  fs::path file = cache.empty() ? fs::path() : cache / ("complete-" + kind);
  std::error_code ec;
  if (!file.empty() && fs::exists(file, ec)) {
    auto age = fs::file_time_type::clock::now() - fs::last_write_time(file, ec);
    if (!ec && age < cache_lifetime) return read_text_file(file);
  }
  auto api = connect(ctx);
  cli::Json items = kind == "group" ? transport::list_groups(api, std::nullopt) : transport::list_products(api);
  std::string out;
  for (auto& item : items) {
    std::string name = item.value("name", "");
    if (kind == "group" && item.contains("product") && item["product"].is_string())
      name = item["product"].get<std::string>() + "/" + name;
    if (!name.empty()) out += name + "\n";
  }
  if (!file.empty()) {
    fs::create_directories(cache, ec);
    if (!ec) write_file_atomic(file, as_bytes(out), 0600);
  }
  return out;
}

}  // namespace

void add_completion(CLI::App& app, cli::Context& ctx) {
  auto shell = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("completion", "Print a shell completion script (bash, zsh, fish)");
  cmd->add_option("SHELL", *shell, "bash, zsh or fish")->required()->check(CLI::IsMember({"bash", "zsh", "fish"}));
  cmd->callback([&app, &ctx, shell] { ctx.write_output(cli::completion_script(cli::describe(app), *shell)); });

  auto kind = std::make_shared<std::string>();
  auto* values = app.add_subcommand("__complete", "");
  values->group("");  // hidden from help
  values->add_option("KIND", *kind)->required()->check(CLI::IsMember({"board", "group", "product"}));
  values->callback([&ctx, kind] {
    // Completion must never print errors or stall a shell: anything that fails offers nothing.
    try {
      if (*kind == "board") {
        for (auto& address : discover_boards(board_discovery(ctx))) {
          ctx.write_output(cli::terminal_safe(address.text()) + "\n");
          if (!address.uid_hint.empty()) ctx.write_output(cli::terminal_safe(address.uid_hint) + "\n");
        }
      } else {
        ctx.write_output(cli::terminal_safe(service_names(ctx, *kind), true));  // names are the service's
      }
    } catch (const std::exception&) {
    }
  });
}

}  // namespace kiln::commands
