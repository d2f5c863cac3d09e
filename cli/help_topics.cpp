// Texts for `kiln help TOPIC`.
#include "cli/help_topics.hpp"

#include <fmt/format.h>

#include <vector>

#include "cli/command_tree.hpp"
#include "core/error.hpp"

namespace kiln::cli {
namespace {

constexpr HelpTopic topics[] = {
    {"keys", "KEYREFs: key files, passphrases and PKCS#11 tokens",
     R"(Every command that signs or verifies takes a KEYREF:

  a PEM file       signing.pem (PKCS#8, optionally encrypted; kiln writes them mode 0600)
  a PKCS#11 URI    pkcs11:token=Station;object=ca-key?pin-source=/run/secrets/pin

The PKCS#11 module comes from --pkcs11-module, KILN_PKCS11_MODULE or the config key
pkcs11-module. The PIN comes from the URI (pin-source=FILE or pin-value=...) or KILN_PKCS11_PIN.
Keys on a token never leave it: kiln asks the module to sign (C_Sign).

Passphrases for encrypted PEM files come from --passphrase-file FILE or --passphrase-env VAR,
never from the command line. kiln never prompts when stdin is not a terminal.

Key types: ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, rsa-3072.
  kiln key generate --type ed25519 -o signing.pem
  kiln key show signing.pem          # type, fingerprint, MCUboot key hash
)"},
    {"images", "MCUboot images: header, TLVs, trailer, and imgtool compatibility",
     R"(kiln image sign writes the MCUboot image format: a 32-byte header (magic 0x96f3b83d, load
address, header size, payload size, flags, version), the payload, a protected TLV area (covered by
the signature: security counter, dependencies, custom TLVs) and an unprotected TLV area (SHA-256,
key hash or full public key, signature). Option names and meanings follow imgtool's, so build
scripts port by renaming the program; Ed25519 and unsigned outputs are byte-identical to imgtool's.

  kiln image sign app.bin app.signed.bin --key k.pem --version 1.2.3+4 \
      --header-size 0x200 --slot-size 0x40000 --pad-header
  kiln image verify app.signed.bin --key k.pem      # exit 3 with the reason on failure
  kiln image info app.signed.bin -o json
)"},
    {"manifests", "SUIT manifests: what a device installs, from where, and why it may",
     R"(A SUIT envelope (draft-ietf-suit-manifest) tells a device which components to install, their
digests and sizes, where to fetch them, and a sequence number that must only grow (anti-rollback).
The manifest is signed with COSE_Sign1 (ES256, ES384 or EdDSA) over its SHA-256 digest; the same
KEYREFs as images work (files or PKCS#11).
)"},
    {"boards", "Board addresses and the SMP link",
     R"(Boards speak MCUmgr SMP (an 8-byte header and a CBOR body) over USB, serial or, for the
emulator, a Unix socket. -b/--board takes:

  usb:BUS-PORT[.PORT...]   a USB board by its physical port
  serial:/dev/ttyACM0      a serial console (SMP console framing)
  emu:/path/board.sock     an emulated board (kiln-board-emu)
  a UID                    resolved among attached boards

With several boards attached and no --board, commands that act on one board refuse rather than
guess. KILN_EMU_DIR (or the config key emu-dir) adds emulator sockets to discovery, and
KILN_SERIAL_PORTS (or serial-ports) adds serial ports by glob, e.g. "/dev/ttyACM*".
)"},
    {"factory", "Factory provisioning: identities, station CA, ledger",
     R"(At the factory each board gets its identity: kiln reads the board's silicon attestation and
checks it against the silicon vendor's root; the board generates its device key inside its secure
element and returns a CSR (or the station injects a key wrapped to the board's transport key); with
firmware in the station profile (factory init --image --manifest --manifest-key) the board is loaded
with the signed image and given the SUIT manifest key and manifest, so it records its sequence
number; the station CA (a file or an HSM) issues the device certificate; the station records the unit in its
ledger (SQLite, hash-chained) before anything irreversible happens, then advances the board's
manufacturing state (Blank -> ModuleComplete -> DeviceComplete, one way). --dry-run shows what
would happen and changes nothing.
)"},
    {"output", "Output formats, quiet/verbose, color and the config file",
     R"(Data goes to stdout, in one of: table (default), json, jsonl, yaml, csv (-o/--output or
KILN_OUTPUT). Every format carries the same fields; lists stream record by record. Progress bars,
logs and errors go to stderr: -q/--quiet leaves only errors, -v/--verbose adds detail, --debug adds
low-level causes to errors. Color is used only on a terminal, never with --no-color or NO_COLOR.

Config file: $XDG_CONFIG_HOME/kiln/config.toml (or --config FILE / KILN_CONFIG), for example

  output = "json"
  pkcs11-module = "/usr/lib/softhsm/libsofthsm2.so"

Precedence: command-line flag, then KILN_* environment variable, then config file, then default.
Commands that write a file take -o/--out FILE; use --output for the format there.
)"},
    {"rollouts", "Staged rollouts: waves, automatic halt, resume, abort and watch",
     R"(A deployment offers images and their SUIT manifest to a device group, in waves:

  kiln product create Thermo --boot-key boot.pem --manifest-key manifest.pem   # what the boards trust
  kiln image upload app.signed.bin --manifest app.suit      # the manifest goes with the image
  kiln deployment create --group "Thermo/Field Test" --image SHA256 --dry-run   # devices, waves, checks
  kiln deployment create --group "Thermo/Field Test" --image SHA256 \
      --rollout 1%,10%,50%,100% --step-after 1h --halt-on-failure 5%

Before anything is created, the service checks what the boards would: an MCUboot image signed by
one of the product's boot keys that fits its slot, a SUIT manifest signed by one of its manifest
keys that describes the image, and a sequence number above what the group runs (the devices that
would refuse it are named). A failed check exits 3 with the reason.

Waves are cumulative shares of the group. Each device has a stable bucket 0..99 per deployment, so
the same devices stay admitted; the next wave opens --step-after (30s, 5m, 1h) after the current
one. The service halts the deployment by itself when the devices that failed, rolled back or
refused the update are above --halt-on-failure of the admitted ones (default 5%, once
--halt-min-executed devices finished, default 5; "--halt-on-failure never" turns it off);
`kiln deployment show ID` says why, with counts per wave and per device status, and lists the
devices that never checked in. `resume` continues a paused or halted deployment and forgives the
failures seen so far; `abort` ends it and sends each device that installed it back to exactly what
it ran before (exit 8 when one cannot be). A newer deployment for the group supersedes the older
one. A deployment completes when its last wave is open and every device it admits reported
installed: a device that never checks in keeps it active (move it out of the group).

Controls, each shown by `deployment show`:
  --wave-success 95% [--wave-success-then pause]   open the next wave once 95% of a wave's own
      devices installed (not before --step-after, if given), or pause until `resume` opens it
  --wave-error 2 | --wave-error 10%   halt when more than 2 (10%) of a wave's devices failed
  --abort-on refused:10%:20   abort when more than 10% of the executed devices refused, once 20
      finished (kinds: failed, refused, rolled_back, timed_out; repeatable)
  --timeout downloading=10m   a device silent that long in a phase (downloading, installing,
      testing) is timed_out, a failure (repeatable)
  --rate 10/m --rate-factor 2 --rate-increase-on notified:50 --rate-max 200   offer it to at
      most 10 new devices a minute, doubled each 50 notified (or succeeded:N), capped
  --start-at 2026-12-24T02:00:00Z   offer nothing before then (waves and rate count from it)
  --window "Mon-Fri 01:00-04:00" [--window-tz Europe/Berlin]   start devices only inside a
      window (repeatable; "Sat,Sun 22:00-02:00" crosses midnight; a device's own zone, set with
      `kiln device update ID --time-zone ZONE`, wins); show gives the next opening
  --retry 3 --retry-backoff 30s --retry-backoff-max 10m   a device whose attempt failed
      transiently (download cut, power lost while installing) is retrying, offered the release
      again after a doubling wait; failed (counted once) when the last attempt fails

`kiln deployment watch ID` follows it: a table redrawn in place on a terminal, a JSON object per
change with -o json, one event per state change with -o jsonl; it exits 0 when the deployment
completes, 8 when it halts and 7 when it is aborted or superseded (130 on Ctrl-C).
`kiln deployment report ID -o csv` lists every device with its outcome and timings.
)"},
    {"exit-codes", "What each exit code means", nullptr},
};

}  // namespace

std::span<const HelpTopic> help_topics() { return topics; }

const HelpTopic& find_help_topic(const std::string& name) {
  std::vector<std::string> names;
  for (auto& t : topics) {
    if (name == t.name) return t;
    names.push_back(t.name);
  }
  std::string list;
  for (auto& n : names) list += (list.empty() ? "" : ", ") + n;
  std::string match = closest_match(name, names);
  throw Error(ExitCode::usage,
              match.empty() ? fmt::format("no help topic '{}'", name)
                            : fmt::format("no help topic '{}': did you mean '{}'?", name, match),
              "topics: " + list);
}

std::string exit_codes_text() {
  std::string t = "kiln's exit codes are stable; scripts may rely on them (docs/exit-codes.md).\n\n";
  for (ExitCode code : {ExitCode::ok, ExitCode::failure, ExitCode::usage, ExitCode::verification_failed,
                        ExitCode::board, ExitCode::service, ExitCode::authentication, ExitCode::conflict,
                        ExitCode::partial, ExitCode::not_found, ExitCode::interrupted})
    t += fmt::format("  {:>3}  {:<20} {}\n", static_cast<int>(code), exit_code_name(code), exit_code_description(code));
  return t;
}

}  // namespace kiln::cli
