// kiln entry logic: global options (flag > KILN_* env > config file > default), dispatch, exit codes.
#include "cli/app.hpp"

#include <cstdlib>
#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/context.hpp"
#include "commands/commands.hpp"
#include "core/error.hpp"
#include "core/interrupt.hpp"

namespace kiln::cli {
namespace {

std::string default_config_path() {
  if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg && *xdg) return std::string(xdg) + "/kiln/config.toml";
  if (const char* home = std::getenv("HOME"); home && *home) return std::string(home) + "/.config/kiln/config.toml";
  return {};
}

// The config file is named before parsing (it supplies defaults), so find --config by hand.
std::string find_config_path(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--") break;
    if (a == "--config" && i + 1 < argc) return argv[i + 1];
    if (a.starts_with("--config=")) return std::string(a.substr(9));
  }
  if (const char* env = std::getenv("KILN_CONFIG"); env && *env) return env;
  return {};
}

std::map<std::string, std::string> load_config(const std::string& path, bool explicit_path) {
  std::map<std::string, std::string> values;
  if (path.empty()) return values;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    if (explicit_path)
      throw Error(ExitCode::usage, fmt::format("config file {} does not exist", path),
                  "fix --config / KILN_CONFIG, or create the file");
    return values;
  }
  std::vector<CLI::ConfigItem> items;
  try {
    items = CLI::ConfigTOML().from_file(path);
  } catch (const CLI::ParseError& e) {
    throw Error(ExitCode::usage, fmt::format("config file {} is not valid TOML: {}", path, e.what()));
  }
  for (auto& item : items) {
    if (item.inputs.empty()) continue;
    std::string key;
    for (auto& p : item.parents) key += p + ".";
    key += item.name;
    std::string value;
    for (auto& in : item.inputs) value += (value.empty() ? "" : ",") + in;
    values[key] = value;
  }
  return values;
}

void print_error(const Error& e, const Context& ctx) {
  std::cerr << "kiln: error: " << e.what() << "\n";
  if (!e.hint().empty()) std::cerr << "  hint: " << e.hint() << "\n";
  if (!e.detail().empty()) {
    if (ctx.global.debug) std::cerr << "  detail: " << e.detail() << "\n";
  }
}

}  // namespace

std::unique_ptr<CLI::App> build_app(Context& ctx) {
  auto app = std::make_unique<CLI::App>(
      "kiln: sign firmware, build SUIT manifests, provision boards at the factory, and update fleets.", "kiln");
  app->fallthrough();
  app->parse_complete_callback([&ctx] { ctx.finalize(); });
  app->require_subcommand(1);
  app->set_help_all_flag("--help-all", "Show help for every command");
  app->set_version_flag("--version", std::string(KILN_VERSION));
  app->option_defaults()->always_capture_default(false);
  app->add_option("-o,--output", ctx.global.output, "Output format: table, json, jsonl, yaml, csv")
      ->envname("KILN_OUTPUT")
      ->check(CLI::IsMember({"table", "json", "jsonl", "yaml", "csv"}));
  app->add_flag("-q,--quiet", ctx.global.quiet, "Only errors on stderr")->envname("KILN_QUIET");
  app->add_flag("-v,--verbose", ctx.global.verbose, "More detail on stderr")->envname("KILN_VERBOSE");
  app->add_flag("--debug", ctx.global.debug, "Low-level detail in errors (OpenSSL, libusb, curl)")
      ->envname("KILN_DEBUG");
  app->add_flag("--no-color", ctx.global.no_color, "Never color output (also NO_COLOR)")->envname("KILN_NO_COLOR");
  app->add_option("--config", ctx.global.config_path, "Config file (TOML)")->envname("KILN_CONFIG");
  app->add_option("--pkcs11-module", ctx.global.pkcs11_module, "PKCS#11 module for pkcs11: KEYREFs")
      ->envname("KILN_PKCS11_MODULE");

  // Config values are defaults for global options; KILN_* and flags override them.
  for (auto* opt : app->get_options()) {
    std::string name = opt->get_single_name();
    auto it = ctx.config.find(name);
    if (it != ctx.config.end() && name != "config") opt->default_str(it->second)->default_val(it->second);
  }

  for (const auto& noun : commands::all_commands()) noun.add(*app, ctx);
  return app;
}

int run(int argc, char** argv) {
  install_interrupt_handlers();
  std::ios::sync_with_stdio(false);
  Context ctx;
  try {
    std::string config_path = find_config_path(argc, argv);
    bool explicit_config = !config_path.empty();
    if (!explicit_config) config_path = default_config_path();
    ctx.config = load_config(config_path, explicit_config);

    auto app = build_app(ctx);
    try {
      app->parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
      return app->exit(e);
    } catch (const CLI::CallForAllHelp& e) {
      return app->exit(e);
    } catch (const CLI::CallForVersion& e) {
      return app->exit(e);
    } catch (const CLI::ParseError& e) {
      if (e.get_exit_code() == 0) return app->exit(e);
      std::cerr << "kiln: error: " << e.what() << "\n";
      std::cerr << "  hint: run 'kiln --help' (or 'kiln <command> --help') for usage\n";
      return static_cast<int>(ExitCode::usage);
    }
    std::cout.flush();
    return std::cout.good() ? 0 : static_cast<int>(ExitCode::failure);
  } catch (const Error& e) {
    std::cout.flush();
    print_error(e, ctx);
    return static_cast<int>(e.code());
  } catch (const std::bad_alloc&) {
    std::cerr << "kiln: error: out of memory\n";
    return static_cast<int>(ExitCode::failure);
  } catch (const std::exception& e) {
    std::cerr << "kiln: error: " << e.what() << "\n  hint: this is a bug in kiln; please report it with --debug output\n";
    return static_cast<int>(ExitCode::failure);
  }
}

}  // namespace kiln::cli
