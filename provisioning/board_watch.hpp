// Watches for boards (an emulator directory with inotify, USB with libusb hotplug or polling) and
// provisions each one as it appears.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>

#include "provisioning/workflow.hpp"
#include "transport/board_address.hpp"

namespace kiln {

struct WatchOptions {
  int jobs = 4;                          // boards provisioned at once
  std::optional<std::size_t> max_boards; // stop after this many boards finished (any result)
  ProvisionOptions provision;
  std::optional<std::filesystem::path> emu_dir;  // watch for <uid>.sock here (inotify)
  bool usb = true;                               // watch USB boards matching usb_ids
  std::vector<std::pair<std::uint16_t, std::uint16_t>> usb_ids = DiscoveryOptions::default_usb_ids();
  std::chrono::milliseconds usb_poll_interval{1000};  // when libusb has no hotplug support
};

// For the operator: how USB boards are noticed ("watching for boards: USB (hotplug) ..."), and each
// USB board as it arrives ("usb:1-1 arrived (hotplug event)" or "(re-scan)").
using WatchNotice = std::function<void(const std::string& message)>;

// Provisions the boards already attached, then every board that appears (a new `<uid>.sock` in
// the emulator directory, a USB board arriving; a USB board unplugged and plugged in again is
// provisioned again, which resumes or reports it already provisioned), until interrupted()
// (SIGINT/SIGTERM) or `max_boards` have finished. Boards in flight are finished before returning.
// Returns every outcome in completion order.
std::vector<ProvisionOutcome> watch_boards(Station& station, const WatchOptions& options, const EventSink& on_event,
                                           const std::function<void(const ProvisionOutcome&)>& on_outcome,
                                           const WatchNotice& on_notice = {});

}  // namespace kiln
