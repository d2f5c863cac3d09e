// Watches an emulator directory (inotify) and provisions each board as its socket appears.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>

#include "provisioning/workflow.hpp"

namespace kiln {

struct WatchOptions {
  int jobs = 4;                          // boards provisioned at once
  std::optional<std::size_t> max_boards; // stop after this many boards finished (any result)
  ProvisionOptions provision;
};

// Provisions the boards already in `emu_dir`, then every `<uid>.sock` created there, until
// interrupted() (SIGINT/SIGTERM) or `max_boards` have finished. Boards in flight are finished
// before returning. Returns every outcome in completion order.
std::vector<ProvisionOutcome> watch_boards(Station& station, const std::filesystem::path& emu_dir,
                                           const WatchOptions& options, const EventSink& on_event,
                                           const std::function<void(const ProvisionOutcome&)>& on_outcome);

}  // namespace kiln
