// kiln-service(8): options and commands come from the CLI11 tree, examples from the README.
#include "service/manual.hpp"

#include <set>

#include <CLI/CLI.hpp>

#include "cli/manpage.hpp"
#include "kiln/version.hpp"

namespace kiln::service {

std::string manual_page(const CLI::App& app) {
  cli::CommandSpec root = cli::describe(app);
  std::set<std::string> no_nouns;
  cli::ProgramPage page;
  page.name = "kiln-service";
  page.section = 8;
  page.version = KILN_RELEASE;
  page.summary = "the reference kiln security service (HTTPS JSON API, SQLite or PostgreSQL store)";
  page.description_roff = R"(\fBkiln-service\fR keeps tenants, products, devices, images and staged deployments for
\fBkiln\fR(1) and answers over HTTPS (TLS 1.2+). People and CI authenticate with bearer tokens; device
agents check in on a second listener with mutual TLS. \fBinit\fR creates a data directory (a CA, the
server certificate and key, the database, the first tenant and \fIadmin.token\fR, mode 0600);
\fBrun\fR serves it. The API is docs/openapi.yaml in the source tree; \fBGET /v1/version\fR answers
without a token.
)";
  page.sections_roff = R"(.SH CONFIGURATION FILE
\fB\-\-config\fR \fIFILE\fR reads a flat TOML file whose keys are the \fBrun\fR flags without their
dashes (\fBdir\fR, \fBlisten\fR, \fBagent\-listen\fR, \fBtls\-certificate\fR, \fBtls\-key\fR,
\fBthreads\fR, \fBmax\-threads\fR, \fBhandshake\-timeout\fR, \fBheader\-timeout\fR, \fBbody\-timeout\fR,
\fBmax\-connections\-per\-address\fR, \fBcheck\-in\-after\fR); a flag on the command line wins.
\fBinit\fR reads \fBdir\fR, \fBstore\fR and \fBstore\-password\-file\fR. The whole file is checked at start: a syntax error, an unknown key,
a value of the wrong type or out of range stops the service with the file, the line and the key
named, exit status 2.
.SH POSTGRESQL
By default the store is SQLite, \fIDIR/kiln.db\fR. \fBinit \-\-store\fR \fIURL\fR keeps the service's
records in PostgreSQL 15 instead: \fIURL\fR is a libpq connection URI such as
\fIpostgresql://kiln@db.example.com/kiln\fR or \fIpostgresql:///kiln?host=/run/postgresql\fR; \fBinit\fR
writes it to \fIDIR/store.toml\fR (mode 0600) and \fBrun\fR uses it. A password is never taken from the
command line: a URL holding one is refused (exit status 2). \fBkiln\-service\fR takes it from
\fB\-\-store\-password\-file\fR \fIFILE\fR (mode 0600, its path kept in \fIstore.toml\fR), else from
\fBKILN_STORE_PASSWORD\fR, else from libpq's own \fBPGPASSWORD\fR, \fBPGPASSFILE\fR or
\fI~/.pgpass\fR; it never prints it. The schema is migrated at start (one transaction per version);
a store a newer release wrote is refused (exit status 7). A store that cannot be reached at \fBinit\fR
or \fBrun\fR stops it with exit status 5; while running, requests get 503 with \fBRetry\-After\fR until
the database is back, and the service reconnects by itself.
.SH SIGNALS
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop accepting connections, let the requests in flight finish, exit 0.
.TP
\fBSIGHUP\fR
Read the TLS certificate and key again: new handshakes present them, established connections keep
theirs. A certificate that cannot be read or does not match its key is reported on stderr and the
previous pair stays in use.
.SH SYSTEMD
The package installs \fIkiln\-service.service\fR: a dynamic user, state in
\fI/var/lib/kiln\-service\fR, settings in \fI/etc/kiln\-service/config.toml\fR, \fBinit \-\-if\-missing\fR
before each start, \fBsystemctl reload\fR sends SIGHUP. With \fBType=notify\fR the service reports
READY=1 once both listeners accept connections, RELOADING=1 and READY=1 around a reload and STOPPING=1
when it drains. It writes these datagrams to \fB$NOTIFY_SOCKET\fR itself (the protocol of
\fBsd_notify\fR(3)) rather than linking libsystemd; outside systemd the variable is unset and nothing
is sent.
.SH ENVIRONMENT
.TP
\fBKILN_STORE_PASSWORD\fR
The PostgreSQL store's password (when no \fBstore\-password\-file\fR is set); libpq's \fBPGPASSWORD\fR
and \fBPGPASSFILE\fR work too.
.SH FILES
.TP
\fI/etc/kiln\-service/config.toml\fR
The settings the systemd unit passes with \fB\-\-config\fR.
.TP
\fIDIR/kiln.db\fR, \fIDIR/images/\fR
The SQLite store and the uploaded images (with \fB\-\-blob\-dir\fR, the images are there instead).
.TP
\fIDIR/store.toml\fR
With \fBinit \-\-store\fR: the PostgreSQL URL (never a password) and the password file, mode 0600.
.TP
\fIDIR/ca.pem\fR, \fIDIR/server.pem\fR, \fIDIR/server.key\fR
The service's CA (clients pass it as \fB\-\-ca\-file\fR) and the server certificate and key.
.TP
\fIDIR/voucher\-key.pem\fR
The Ed25519 key that signs device\-transfer vouchers (mode 0600), created by \fBinit\fR (or by the first
\fBrun\fR of an older directory). Each voucher's record in the store keeps its public half, so instances
sharing a store verify each other's.
.TP
\fIDIR/ticket\-key\fR
The 32\-byte secret the TLS session\-ticket keys are derived from, an hour's keys at a time (mode 0600,
created like \fIvoucher\-key.pem\fR). Instances on copies of the directory resume each other's
tickets, and a restart keeps them; replacing it on every instance makes every earlier ticket useless.
.TP
\fIDIR/admin.token\fR
The first tenant's admin token (mode 0600), for \fBkiln login \-\-token\-file\fR.
.SH EXIT STATUS
0 on success, 1 on a failure (for example a certificate that cannot be loaded), 2 on a usage or
configuration error (also a store URL holding a password), 5 when the store cannot be reached, 6 when
the store password file is readable by others, 7 when a tenant already exists or the store was written
by a newer release, 9 when a tenant does not exist.
)";
  page.examples = cli::readme_examples(cli::readme_text(), no_nouns)["kiln-service"];
  page.examples.push_back("systemctl enable --now kiln-service     # as packaged; settings in /etc/kiln-service/config.toml");
  page.examples.push_back("systemctl reload kiln-service           # after renewing the TLS certificate");
  page.see_also_roff = R"(\fBkiln\fR(1), \fBkiln\-device\fR(1), \fBkiln\-deployment\fR(1), \fBkiln\-board\-emu\fR(1), \fBsystemd.service\fR(5))";
  return cli::program_man_page(root, page);
}

}  // namespace kiln::service
