// kiln entry logic: global options (flag > KILN_* env > config file > default), dispatch, exit codes.
#include "cli/app.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/command_tree.hpp"
#include "cli/context.hpp"
#include "commands/commands.hpp"
#include "core/error.hpp"
#include "core/interrupt.hpp"
#include "kiln/version.hpp"

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
  // Messages quote what boards and the service sent: escaped, so they cannot drive the terminal.
  std::cerr << "kiln: error: " << terminal_safe(e.what(), true) << "\n";
  if (!e.hint().empty()) std::cerr << "  hint: " << terminal_safe(e.hint(), true) << "\n";
  if (!e.detail().empty()) {
    if (ctx.global.debug) std::cerr << "  detail: " << terminal_safe(e.detail(), true) << "\n";
  }
}


// After a parse error, finds the first word the command tree does not know and the closest known one.
std::string did_you_mean(const CLI::App& root, int argc, char** argv) {
  const CLI::App* current = &root;
  auto all = [](const CLI::App*) { return true; };
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") break;
    if (arg.starts_with("-") && arg.size() > 1) {
      std::string name = arg.substr(0, arg.find('='));
      std::vector<std::string> known;
      const CLI::Option* found = nullptr;
      for (const CLI::App* level = current; level; level = level->get_parent())
        for (const CLI::Option* opt : level->get_options()) {
          for (auto& l : opt->get_lnames()) known.push_back("--" + l);
          for (auto& s : opt->get_snames()) known.push_back("-" + s);
          if (opt->check_name(name)) found = opt;
        }
      if (!found) {
        std::string match = closest_match(name, known);
        return match.empty() ? "" : fmt::format("unknown option '{}': did you mean '{}'?", name, match);
      }
      // A flag (-q, --debug) takes no value: the next word is a command or an argument, not the flag's.
      bool takes_value = found->get_items_expected_max() != 0;
      if (takes_value && arg.find('=') == std::string::npos && name.starts_with("--")) ++i;
      else if (takes_value && name.size() == 2) ++i;
      continue;
    }
    auto subs = current->get_subcommands(all);
    auto it = std::find_if(subs.begin(), subs.end(), [&](const CLI::App* s) { return s->check_name(arg); });
    if (it != subs.end()) {
      current = *it;
      continue;
    }
    if (!subs.empty() && current->get_options([](const CLI::Option* o) { return o->get_lnames().empty() && o->get_snames().empty(); }).empty()) {
      std::vector<std::string> names;
      for (auto* s : subs) names.push_back(s->get_name());
      std::string match = closest_match(arg, names);
      std::string where = current == &root ? "kiln" : "kiln " + current->get_name();
      if (!match.empty()) return fmt::format("'{}' is not a {} command: did you mean '{}'?", arg, where, match);
      return fmt::format("'{}' is not a {} command", arg, where);
    }
  }
  return {};
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
  app->add_option("--config", ctx.global.config_path, "Config file (TOML)")->envname("KILN_CONFIG")->type_name("FILE");
  app->add_option("--pkcs11-module", ctx.global.pkcs11_module, "PKCS#11 module for pkcs11: KEYREFs")
      ->type_name("PATH")
      ->envname("KILN_PKCS11_MODULE");
  app->add_option("--client-cert", ctx.global.client_cert, "Service: authenticate with this TLS client certificate (PEM)")
      ->type_name("FILE")
      ->envname("KILN_CLIENT_CERT");
  app->add_option("--client-key", ctx.global.client_key, "Service: the client certificate's key (PEM file, mode 0600)")
      ->type_name("FILE")
      ->envname("KILN_CLIENT_KEY");
  app->add_option("--stall-timeout", ctx.global.stall_timeout, "Service: seconds without data before a transfer is stalled")
      ->type_name("SECONDS")
      ->envname("KILN_STALL_TIMEOUT")
      ->check(CLI::Range(1, 3600));

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
  // `kiln --version` alone needs no command tree: answer before building it (scripts call it a lot).
  if (argc == 2 && std::string_view(argv[1]) == "--version") {
    std::fputs(KILN_VERSION "\n", stdout);
    return 0;
  }
  install_interrupt_handlers();
  std::ios::sync_with_stdio(false);
  Context ctx;
  try {
    std::string config_path = find_config_path(argc, argv);
    bool explicit_config = !config_path.empty();
    if (!explicit_config) config_path = default_config_path();
    ctx.config = load_config(config_path, explicit_config);

    // The config file's values are the global options' defaults, checked as they are set: one the option does
    // not allow is the user's to fix (exit 2), as the same value given as a flag is.
    std::unique_ptr<CLI::App> app;
    try {
      app = build_app(ctx);
    } catch (const CLI::ParseError& e) {
      throw Error(ExitCode::usage, fmt::format("config file {}: {}", config_path, e.what()),
                  "fix or remove the value in the config file");
    }
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
      std::string suggestion = did_you_mean(*app, argc, argv);
      std::cerr << "kiln: error: " << terminal_safe(suggestion.empty() ? std::string(e.what()) : suggestion, true)
                << "\n";
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
    std::cerr << "kiln: error: " << terminal_safe(e.what(), true) << "\n  hint: this is a bug in kiln; please report it with --debug output\n";
    return static_cast<int>(ExitCode::failure);
  }
}

}  // namespace kiln::cli
