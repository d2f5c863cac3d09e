// kiln image: sign, verify and inspect MCUboot images.
#include <CLI/CLI.hpp>

#include "cli/context.hpp"
#include "commands/commands.hpp"

namespace kiln::commands {

void add_image(CLI::App& app, cli::Context& ctx) {
  auto* image = app.add_subcommand("image", "Sign, verify and inspect MCUboot firmware images");
  image->require_subcommand(1);
  add_image_service_verbs(image, ctx);
}

}  // namespace kiln::commands
