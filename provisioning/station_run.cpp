// `kiln factory provision|run|watch`: open the station, provision or watch, seal the run.
#include "provisioning/station_run.hpp"

#include <chrono>
#include <cstdlib>

#include "core/error.hpp"

namespace kiln {

std::string station_operator(const std::string& given) {
  if (!given.empty()) return given;
  const char* user = std::getenv("USER");
  return user && *user ? user : "unknown";
}

ProvisionOptions provision_options(const StationRun& run) {
  ProvisionOptions options;
  options.dry_run = run.dry_run;
  options.reprovision = run.reprovision;
  options.board_timeout = std::chrono::milliseconds(run.timeout_ms);
  return options;
}

std::vector<ProvisionOutcome> run_station(const StationRun& run, const std::vector<BoardAddress>& boards,
                                          const KeyOptions& keys, const EventSink& on_event) {
  if (boards.empty())
    throw Error(ExitCode::board, "no boards attached", "plug boards in, or set KILN_EMU_DIR for emulated boards");
  auto station = open_station(run.profile, keys, station_operator(run.operator_name));
  auto outcomes = provision_boards(*station, boards, run.jobs, provision_options(run), on_event);
  if (!run.dry_run) station->ledger->checkpoint();  // seal this run
  return outcomes;
}

WatchOptions watch_where(const DiscoveryOptions& discovery, std::optional<std::size_t> max_boards) {
  WatchOptions where;
  where.max_boards = max_boards;
  where.emu_dir = discovery.emu_dir;
  where.usb_ids = discovery.usb_ids;
  return where;
}

std::vector<ProvisionOutcome> watch_station(const StationRun& run, WatchOptions where, const KeyOptions& keys,
                                            const EventSink& on_event, const WatchNotice& on_notice) {
  auto station = open_station(run.profile, keys, station_operator(run.operator_name));
  where.jobs = run.jobs;
  where.provision = provision_options(run);
  if (on_notice) on_notice("Ctrl-C stops the watch (boards in flight are finished)");

  auto outcomes = watch_boards(*station, where, on_event, {}, on_notice);
  if (!run.dry_run) station->ledger->checkpoint();
  return outcomes;
}

}  // namespace kiln
