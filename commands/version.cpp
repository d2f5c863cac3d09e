// kiln version: this build and the libraries it runs with.
#include <dlfcn.h>

#include <CLI/CLI.hpp>
#include <libusb.h>
#include <openssl/crypto.h>

#include "cli/context.hpp"
#include "commands/commands.hpp"
#include "kiln/version.hpp"

namespace kiln::commands {
namespace {

// libcurl is loaded only by commands that talk to the service; ask it for its version the same way.
std::string curl_version_string() {
  void* handle = ::dlopen("libcurl.so.4", RTLD_LAZY | RTLD_LOCAL);
  if (!handle) return "not installed";
  using VersionFn = char* (*)();
  auto fn = reinterpret_cast<VersionFn>(::dlsym(handle, "curl_version"));
  std::string v = fn ? fn() : "unknown";
  // "libcurl/7.88.1 OpenSSL/3.0.x ..." -> "7.88.1"
  if (v.starts_with("libcurl/")) v = v.substr(8, v.find(' ') == std::string::npos ? std::string::npos : v.find(' ') - 8);
  return v;
}

}  // namespace

void add_version(CLI::App& app, cli::Context& ctx) {
  auto* cmd = app.add_subcommand("version", "Show the versions of kiln and the libraries it uses");
  cmd->callback([&ctx] {
    const libusb_version* usb = libusb_get_version();
    cli::Json v = {
        {"kiln", KILN_VERSION},
        {"openssl", OpenSSL_version(OPENSSL_VERSION_STRING)},
        {"libusb", std::to_string(usb->major) + "." + std::to_string(usb->minor) + "." + std::to_string(usb->micro)},
        {"libcurl", curl_version_string()},
    };
    ctx.render(v);
  });
}

}  // namespace kiln::commands
