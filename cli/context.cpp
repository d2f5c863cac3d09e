// Context: global options resolved into render settings, logging to stderr, secret sources.
#include "cli/context.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "core/error.hpp"
#include "core/files.hpp"

namespace kiln::cli {

void Context::finalize() {
  render_options_.format = parse_output_format(global.output);
  bool stdout_tty = ::isatty(STDOUT_FILENO) == 1;
  stdin_tty_ = ::isatty(STDIN_FILENO) == 1;
  stderr_tty_ = ::isatty(STDERR_FILENO) == 1;
  stdout_tty_ = stdout_tty;
  const char* no_color_env = std::getenv("NO_COLOR");
  bool no_color = global.no_color || (no_color_env && *no_color_env);
  render_options_.color = stdout_tty && !no_color;
  if (stdout_tty) {
    struct winsize ws {};
    if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) render_options_.width = ws.ws_col;
  } else if (const char* cols = std::getenv("COLUMNS")) {
    render_options_.width = std::atoi(cols);
  }
}

// Once an output file went to stdout ("-"), results go to stderr: stdout carries that output alone.
static std::ostream& result_stream() { return standard_output_taken() ? std::cerr : std::cout; }

void Context::render(const Json& value) const { cli::render(result_stream(), value, render_options_); }

void Context::write_output(std::string_view data) const {
  std::cout.write(data.data(), static_cast<std::streamsize>(data.size()));
  std::cout.flush();
}

std::unique_ptr<RecordWriter> Context::records() const { return make_record_writer(result_stream(), render_options_); }

void Context::info(std::string_view message) const {
  if (!global.quiet) std::cerr << terminal_safe(message, true) << "\n";
}
void Context::detail(std::string_view message) const {
  if (global.verbose && !global.quiet) std::cerr << terminal_safe(message, true) << "\n";
}
void Context::debug(std::string_view message) const {
  if (global.debug) std::cerr << "debug: " << terminal_safe(message, true) << "\n";
}
void Context::warn(std::string_view message) const {
  std::cerr << "kiln: warning: " << terminal_safe(message, true) << "\n";
}

bool Context::confirm(std::string_view question) const {
  if (!stdin_tty_) return false;
  std::cerr << terminal_safe(question) << " Type 'yes' to continue: " << std::flush;
  std::string answer;
  std::getline(std::cin, answer);
  return answer == "yes";
}

std::optional<std::string> Context::config_value(const std::string& key) const {
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  return it->second;
}

KeyOptions Context::key_options(const SecretSource& passphrase) const {
  KeyOptions options;
  options.passphrase = read_secret(passphrase, "passphrase");
  if (!global.pkcs11_module.empty()) options.pkcs11_module = global.pkcs11_module;
  if (const char* pin = std::getenv("KILN_PKCS11_PIN")) options.pkcs11_pin = std::string(pin);
  return options;
}

std::optional<std::string> read_secret(const SecretSource& source, std::string_view what) {
  if (!source.file.empty() && !source.env.empty())
    throw Error(ExitCode::usage, fmt::format("give the {} either in a file or in a variable, not both", what));
  std::string value;
  if (!source.file.empty()) {
    value = read_text_file(source.file);
  } else if (!source.env.empty()) {
    const char* v = std::getenv(source.env.c_str());
    if (!v)
      throw Error(ExitCode::usage, fmt::format("environment variable {} (the {}) is not set", source.env, what),
                  fmt::format("export {} or name another variable", source.env));
    value = v;
  } else {
    return std::nullopt;
  }
  while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) value.pop_back();
  if (value.empty()) throw Error(ExitCode::usage, fmt::format("the {} is empty", what));
  return value;
}

void add_passphrase_options(CLI::App* command, SecretSource& source) {
  command->add_option("--passphrase-file", source.file, "Read the key passphrase from this file")
      ->check(CLI::ExistingFile);
  command->add_option("--passphrase-env", source.env, "Read the key passphrase from this environment variable");
}

}  // namespace kiln::cli
