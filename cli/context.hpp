// What every command gets: parsed global options, config values, renderers and stderr logging.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "cli/output.hpp"
#include "signing/key_ref.hpp"

namespace CLI {
class App;
}

namespace kiln::cli {

struct GlobalOptions {
  std::string output = "table";
  bool quiet = false;
  bool verbose = false;
  bool debug = false;
  bool no_color = false;
  std::string config_path;
  std::string pkcs11_module;
  std::string client_cert;  // station mutual TLS with the service (PEM files)
  std::string client_key;
  long stall_timeout = 30;  // seconds without data before a service transfer counts as stalled
};

// A secret read from a file or an environment variable, never from the command line itself.
struct SecretSource {
  std::string file;
  std::string env;
  bool given() const { return !file.empty() || !env.empty(); }
};

class Context {
 public:
  GlobalOptions global;
  // Config file values, "key" or "section.key" -> value (strings as written).
  std::map<std::string, std::string> config;

  // Call after parsing: resolves format, color and terminal facts.
  void finalize();

  OutputFormat format() const { return render_options_.format; }
  bool color() const { return render_options_.color; }
  bool stdin_is_terminal() const { return stdin_tty_; }
  bool stderr_is_terminal() const { return stderr_tty_; }
  bool stdout_is_terminal() const { return stdout_tty_; }
  const RenderOptions& render_options() const { return render_options_; }

  // Data to stdout in the chosen format.
  void render(const Json& value) const;
  std::unique_ptr<RecordWriter> records() const;
  // The command's output as raw bytes or text (a public key, a completion script, a help page): to stdout
  // as is, flushed at once (a pipe's reader sees it as it is written).
  void write_output(std::string_view data) const;

  // Human messages to stderr. info is silenced by --quiet; detail needs --verbose; debug --debug.
  void info(std::string_view message) const;
  void detail(std::string_view message) const;
  void debug(std::string_view message) const;
  void warn(std::string_view message) const;
  // Asks on stderr and reads the answer from stdin: only "yes" confirms. Never asks (false) when stdin is not
  // a terminal: callers refuse with a message saying which flag to pass instead.
  bool confirm(std::string_view question) const;

  std::optional<std::string> config_value(const std::string& key) const;

  // Key-opening options: PKCS#11 module and PIN sources, optional passphrase for PEM files.
  KeyOptions key_options(const SecretSource& passphrase = {}) const;

 private:
  RenderOptions render_options_;
  bool stdin_tty_ = false;
  bool stderr_tty_ = false;
  bool stdout_tty_ = false;
};

// Reads a secret (passphrase, PIN, token) from its source; trailing newline removed.
std::optional<std::string> read_secret(const SecretSource& source, std::string_view what);

// Registers --passphrase-file and --passphrase-env on a command.
void add_passphrase_options(CLI::App* command, SecretSource& source);

}  // namespace kiln::cli
