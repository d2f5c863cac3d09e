// `kiln factory provision|run|watch` as the operator asks for them: the station opened once from its profile,
// the boards provisioned (those named, or each one as it appears), and the run sealed with a signed ledger
// checkpoint unless it was a dry run.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "provisioning/board_watch.hpp"
#include "provisioning/workflow.hpp"
#include "signing/key_ref.hpp"
#include "transport/board_address.hpp"

namespace kiln {

struct StationRun {
  std::string profile;        // the station profile (kiln factory init)
  std::string operator_name;  // recorded in the ledger; empty: $USER, else "unknown"
  int jobs = 4;               // boards in parallel
  bool dry_run = false;       // show what would happen to each board; change nothing
  bool reprovision = false;   // see ProvisionOptions::reprovision
  int timeout_ms = 5000;      // each board answer
};

// The operator the ledger records: `given`, else $USER, else "unknown".
std::string station_operator(const std::string& given);

// The per-board options the run asks for.
ProvisionOptions provision_options(const StationRun& run);

// Provisions `boards` on run.jobs workers. Error(board) naming how to attach boards when there are none (before
// the station is opened); board failures are in the outcomes (require_all_provisioned names them).
std::vector<ProvisionOutcome> run_station(const StationRun& run, const std::vector<BoardAddress>& boards,
                                          const KeyOptions& keys, const EventSink& on_event);

// Where a watch looks for boards (discovery's emulator directory and USB IDs) and when it stops.
WatchOptions watch_where(const DiscoveryOptions& discovery, std::optional<std::size_t> max_boards);

// watch_boards for the run: `where` says where boards appear and when to stop (emu_dir, usb_ids, max_boards); its jobs and provision options are the run's. The operator is told first how to stop it.
std::vector<ProvisionOutcome> watch_station(const StationRun& run, WatchOptions where, const KeyOptions& keys,
                                            const EventSink& on_event, const WatchNotice& on_notice);

}  // namespace kiln
