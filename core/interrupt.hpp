// Cooperative interruption: SIGINT/SIGTERM set a flag that long-running library loops check.
#pragma once

namespace kiln {

// Installs the handlers once (the CLI does this at start). A second signal kills the process.
void install_interrupt_handlers();
bool interrupted();
// Throws Error(interrupted) if a signal arrived; call between chunks of long work.
void check_interrupted();

}  // namespace kiln
