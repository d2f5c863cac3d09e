// kiln-board-emu(1): options come from the CLI11 tree, examples from the README.
#include "emulator/manual.hpp"

#include <CLI/CLI.hpp>

#include "cli/manpage.hpp"
#include "kiln/version.hpp"

namespace kiln::emu {

std::string manual_page(const CLI::App& app) {
  cli::ProgramPage page;
  page.name = "kiln-board-emu";
  page.section = 1;
  page.version = KILN_RELEASE;
  page.summary = "virtual boards with a secure element, MCUboot slots, an SMP server and an update agent";
  page.description_roff = R"(\fBkiln-board-emu\fR runs \fB\-\-count\fR emulated secured microcontroller boards in
\fB\-\-dir\fR, each with a software secure element, flash slots, manufacturing states and an MCUmgr SMP
server on a Unix socket (\fIDIR/UID.sock\fR) or a pseudo-terminal (\fB\-\-serial\fR). It prints one
line per board (its UID and the socket) and then \fBready\fR on stdout, and runs until SIGTERM or
SIGINT. \fBkiln\fR(1) finds the boards through \fBKILN_EMU_DIR\fR or \fB\-\-board emu:DIR/UID.sock\fR.
With \fB\-\-agent\fR every provisioned board runs the update agent: it checks in with the service named
at provisioning over mutual TLS, installs, test-boots and confirms or rolls back deployments.
)";
  page.sections_roff = R"(.SH ENVIRONMENT
.TP
\fBKILN_EMU_DIR\fR
The state directory when \fB\-\-dir\fR is not given (kiln reads it too, to list the boards).
.SH EXIT STATUS
0 after SIGTERM or SIGINT, 2 on a usage error, 75 when an injected power loss cuts a board.
)";
  page.examples = cli::readme_examples(cli::readme_text(), {})["kiln-board-emu"];
  page.see_also_roff = R"(\fBkiln\fR(1), \fBkiln\-board\fR(1), \fBkiln\-factory\fR(1), \fBkiln\-service\fR(8))";
  return cli::program_man_page(cli::describe(app), page);
}

}  // namespace kiln::emu
