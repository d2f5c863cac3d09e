// The service commands' progress bar: redrawn in place on a terminal, finished with a newline.
#include "commands/service_session.hpp"

#include <iostream>

#include <fmt/format.h>

namespace kiln::commands {

std::function<void(std::uint64_t, std::uint64_t)> progress_bar(const cli::Context& ctx, std::string label) {
  if (!ctx.stderr_is_terminal() || ctx.global.quiet) return {};
  return [label = std::move(label)](std::uint64_t done, std::uint64_t total) {
    constexpr int width = 30;
    int percent = total ? static_cast<int>(done * 100 / total) : 100;
    int filled = percent * width / 100;
    std::cerr << fmt::format("\r{} [{}{}] {:3}%", label, std::string(static_cast<std::size_t>(filled), '#'),
                             std::string(static_cast<std::size_t>(width - filled), ' '), percent);
    if (done >= total) std::cerr << "\n";
    std::cerr.flush();
  };
}

}  // namespace kiln::commands
