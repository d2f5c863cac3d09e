// SIGINT/SIGTERM -> flag; work stops at the next check and unwinds, removing temp files.
#include "core/interrupt.hpp"

#include <csignal>

#include "core/error.hpp"

namespace kiln {
namespace {
volatile std::sig_atomic_t g_interrupted = 0;

void on_signal(int sig) {
  g_interrupted = 1;
  std::signal(sig, SIG_DFL);  // a second Ctrl-C ends the process at once
}
}  // namespace

void install_interrupt_handlers() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

bool interrupted() { return g_interrupted != 0; }

void check_interrupted() {
  if (g_interrupted) throw Error(ExitCode::interrupted, "interrupted", "nothing was left half-written; run the command again");
}

}  // namespace kiln
