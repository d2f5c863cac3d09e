// The per-board provisioning workflow: a resumable sequence of steps, each of which first reads
// what the board (and the ledger) already holds, and runs over many boards concurrently.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "provisioning/firmware.hpp"
#include "provisioning/ledger.hpp"
#include "provisioning/profile.hpp"
#include "signing/key_ref.hpp"
#include "transport/board_address.hpp"

namespace kiln {

// Steps in order. Every step is skipped when the board already holds its result.
enum class ProvisionStep { attest, encryption_key, firmware, identity, certificate, install_chain, install_config, ledger, final_state };
std::string_view provision_step_name(ProvisionStep step);


// Everything a station needs, opened once per run and shared by all workers.
struct Station {
  StationProfile profile;
  std::string profile_hash;
  std::string operator_name;
  std::unique_ptr<Signer> ca;              // serialised: workers and ledger checkpoints share it
  std::unique_ptr<Signer> station_signer;  // null when the CA key also signs the ledger
  Bytes ca_certificate_der;
  Bytes vendor_root_der;
  std::string trust_anchor_pem;
  Bytes boot_key_hash;
  std::optional<StationFirmware> firmware;  // the firmware step runs when the profile names an image
  std::unique_ptr<Ledger> ledger;
  // UIDs being provisioned right now by this process (two boards reporting one UID: one is a clone).
  std::mutex in_flight_mutex;
  std::set<std::string> in_flight;
};
std::unique_ptr<Station> open_station(const std::filesystem::path& profile_path, const KeyOptions& key_options,
                                      const std::string& operator_name);

struct ProvisionEvent {
  std::string board;
  std::string uid;
  std::string step;
  StepStatus result = StepStatus::ok;
  std::int64_t duration_ms = 0;
  std::string error;
};
using EventSink = std::function<void(const ProvisionEvent&)>;

struct ProvisionOutcome {
  std::string board;
  std::string uid;
  BoardStatus result = BoardStatus::failed;
  std::string failed_step;
  std::string error;
  ExitCode code = ExitCode::ok;
  std::string certificate_serial;
  std::vector<std::string> planned_steps;  // dry run: the steps that would change the board
  std::int64_t duration_ms = 0;
};

struct ProvisionOptions {
  bool dry_run = false;
  // Issue a new certificate for a UID this station already certified whose board no longer holds
  // the certified key (recorded as a re-provisioning). Without it such a board is refused (exit 7).
  bool reprovision = false;
  std::chrono::milliseconds board_timeout{5000};
};

// One board, start to finish (or to the first failure). Never throws for board problems: the
// outcome names the failed step and error, and the ledger records the failed attempt.
ProvisionOutcome provision_board(Station& station, const BoardAddress& board, const ProvisionOptions& options,
                                 const EventSink& on_event);

// Many boards on `jobs` worker threads; one failing or hung board never stops the others.
// Outcomes are in the order of `boards`. `on_event` is called from worker threads (serialise in it).
std::vector<ProvisionOutcome> provision_boards(Station& station, const std::vector<BoardAddress>& boards, int jobs,
                                               const ProvisionOptions& options, const EventSink& on_event);

// Throws the error that names every failed board: its own exit code and step for a single board, exit 8
// (partial) naming each failed board and step for several. Returns when none failed.
void require_all_provisioned(const std::vector<ProvisionOutcome>& outcomes);

}  // namespace kiln
