// Board watch: inotify on the emulator directory and a USB hotplug (or polling) watch, one worker
// per new board, at most `jobs` at once.
#include "provisioning/board_watch.hpp"

#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "core/interrupt.hpp"

namespace kiln {

namespace {

struct FileDescriptor {
  int fd;
  ~FileDescriptor() {
    if (fd >= 0) close(fd);
  }
};

bool is_socket_name(const std::string& name) { return name.size() > 5 && name.ends_with(".sock"); }

}  // namespace

std::vector<ProvisionOutcome> watch_boards(Station& station, const WatchOptions& options, const EventSink& on_event,
                                           const std::function<void(const ProvisionOutcome&)>& on_outcome,
                                           const WatchNotice& on_notice) {
  FileDescriptor inotify{-1};
  if (options.emu_dir) {
    std::error_code made;
    std::filesystem::create_directories(*options.emu_dir, made);
    if (made)
      throw Error(ExitCode::failure, fmt::format("cannot watch {}: {}", options.emu_dir->string(), made.message()));
    inotify.fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (inotify.fd < 0 || inotify_add_watch(inotify.fd, options.emu_dir->c_str(), IN_CREATE | IN_MOVED_TO) < 0)
      throw Error(ExitCode::failure, fmt::format("cannot watch {}: {}", options.emu_dir->string(), std::strerror(errno)));
  }
  std::unique_ptr<UsbBoardWatch> usb;
  if (options.usb) usb = std::make_unique<UsbBoardWatch>(options.usb_ids, options.usb_poll_interval);
  // The boards already plugged in are enumerated before the watch is announced: a board plugged in after
  // the announcement is then noticed by its hotplug event, not by a first scan that ran after it.
  std::vector<BoardAddress> present;
  if (usb) present = usb->poll();
  if (on_notice) {
    std::string usb_mode = !usb             ? "off"
                           : usb->hotplug() ? "hotplug"
                                            : fmt::format("polling every {} ms", options.usb_poll_interval.count());
    on_notice(fmt::format("watching for boards: USB ({}){}", usb_mode,
                          options.emu_dir ? ", emulator directory " + options.emu_dir->string() : std::string()));
  }

  std::mutex mutex;
  std::condition_variable changed;
  std::size_t running = 0, finished = 0, started = 0;
  std::vector<ProvisionOutcome> outcomes;
  std::vector<std::thread> workers;
  std::set<std::string> seen_sockets;
  auto limit_reached = [&] { return options.max_boards && finished >= *options.max_boards; };

  auto start_board = [&](const BoardAddress& address) {
    if (options.max_boards && started >= *options.max_boards) return;
    ++started;
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return running < static_cast<std::size_t>(std::max(options.jobs, 1)); });
    ++running;
    workers.emplace_back([&, address] {
      ProvisionOutcome outcome;
      // A socket (or a USB device node) exists a moment before the board answers: retry a refused connect.
      for (int attempt = 0; attempt < 5; ++attempt) {
        outcome = provision_board(station, address, options.provision, on_event);
        if (outcome.result != BoardStatus::failed || outcome.failed_step != "connect") break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      std::lock_guard done(mutex);
      if (on_outcome) on_outcome(outcome);
      outcomes.push_back(std::move(outcome));
      --running;
      ++finished;
      changed.notify_all();
    });
  };
  auto start_socket = [&](const std::string& name) {
    if (!is_socket_name(name) || seen_sockets.count(name)) return;
    seen_sockets.insert(name);
    start_board({BoardAddress::Kind::emulator, (*options.emu_dir / name).string(), name.substr(0, name.size() - 5)});
  };

  if (options.emu_dir) {
    std::vector<std::string> existing;
    for (const auto& entry : std::filesystem::directory_iterator(*options.emu_dir))
      existing.push_back(entry.path().filename().string());
    std::sort(existing.begin(), existing.end());
    for (const auto& name : existing) start_socket(name);
  }
  for (const auto& board : present) {
    if (on_notice) on_notice(fmt::format("{} arrived ({})", board.text(), usb->last_cause()));
    start_board(board);
  }

  alignas(inotify_event) char buffer[4096];
  while (!interrupted()) {
    {
      std::lock_guard lock(mutex);
      if (limit_reached()) break;
    }
    if (usb)
      for (const auto& board : usb->poll()) {
        if (on_notice) on_notice(fmt::format("{} arrived ({})", board.text(), usb->last_cause()));
        start_board(board);
      }
    pollfd fd{inotify.fd, POLLIN, 0};
    if (poll(&fd, inotify.fd >= 0 ? 1 : 0, 200) <= 0) continue;
    ssize_t length = read(inotify.fd, buffer, sizeof buffer);
    for (ssize_t offset = 0; offset < length;) {
      auto* event = reinterpret_cast<const inotify_event*>(buffer + offset);
      if (event->len > 0) start_socket(event->name);
      offset += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
    }
  }
  for (auto& worker : workers) worker.join();
  return outcomes;
}

}  // namespace kiln
