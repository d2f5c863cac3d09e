// kiln-board-emu: runs N virtual boards, each on D/<uid>.sock, until SIGINT/SIGTERM.
#include <algorithm>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/files.hpp"
#include "emulator/agent.hpp"
#include "emulator/board.hpp"
#include "emulator/manual.hpp"
#include "emulator/serial_server.hpp"
#include "emulator/server.hpp"
#include "kiln/version.hpp"

namespace fs = std::filesystem;
using namespace kiln;

namespace {

// Existing boards in the directory, in creation order.
std::vector<fs::path> existing_boards(const fs::path& dir) {
  std::vector<std::pair<int, fs::path>> found;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_directory() || !fs::exists(entry.path() / "state.json")) continue;
    auto state = nlohmann::json::parse(read_text_file(entry.path() / "state.json"));
    found.emplace_back(state.value("index", 0), entry.path());
  }
  std::sort(found.begin(), found.end());
  std::vector<fs::path> paths;
  for (auto& [index, path] : found) paths.push_back(path);
  return paths;
}

int run(int argc, char** argv) {
  CLI::App app{"kiln-board-emu: virtual boards with a secure element, MCUboot slots and an SMP server"};
  std::string dir;
  int count = 1;
  bool print_root = false;
  bool serial = false;
  std::uint64_t latency_us = 0;
  emu::BoardOptions board_options;
  emu::LinkShaping shaping;
  emu::FaultInjection faults;
  std::uint64_t drop_after = 0, power_loss_at = 0;
  std::vector<std::string> fail_commands;
  bool agent = false, verbose = false;
  double check_in_interval = 60;
  std::string fail_version, encryption_key;
  app.set_version_flag("--version", std::string(KILN_VERSION));
  app.add_option("--dir", dir, "State directory: boards, sockets (<uid>.sock) and the vendor root")
      ->envname("KILN_EMU_DIR")
      ->required();
  app.add_option("--count", count, "How many boards to run (existing ones are reused)")->check(CLI::Range(1, 256));
  app.add_flag("--print-vendor-root", print_root, "Print the emulated silicon vendor's root certificate (PEM) and exit");
  app.add_flag("--serial", serial,
               "Serve each board on a pseudo-terminal (D/<uid>.tty, SMP console framing) instead of a socket; "
               "link shaping and faults apply to sockets only");
  app.add_option("--latency-us", latency_us, "One-way link latency in microseconds");
  app.add_option("--bandwidth", shaping.bandwidth, "Host-to-board bytes per second (USB FS ~1500000); 0 = unlimited");
  app.add_option("--drop-after-bytes", drop_after, "Drop the connection once after this many bytes (unplug)");
  app.add_option("--corrupt-every", faults.corrupt_every, "Damage every Nth response packet");
  app.add_option("--fail-command", fail_commands, "Answer GROUP:ID with rc 1 (repeatable)");
  app.add_option("--power-loss-at", power_loss_at, "Cut power (exit 75) after this many flash bytes written");
  app.add_option("--slot-size", board_options.slot_size, "Bytes per flash slot");
  app.add_option("--buffer-size", board_options.buffer_size, "SMP buffer size reported to hosts")
      ->check(CLI::Range(256, 65535));
  app.add_option("--buffer-count", board_options.buffer_count, "SMP buffers reported to hosts")->check(CLI::Range(1, 64));
  app.add_flag("--agent", agent,
               "Run the update agent on every device-complete board: check in with the service over mutual TLS, "
               "install deployments (see docs/board-protocol.md)");
  app.add_option("--check-in-interval", check_in_interval, "Seconds between an agent's check-ins (jittered +-10%)")
      ->check(CLI::Range(0.05, 86400.0));
  app.add_option("--fail-version", fail_version,
                 "Images of this version fail their health check after the test boot (the agent rolls them back)");
  app.add_option("--encryption-key", encryption_key,
                 "Install this image-encryption private key (PEM: ECIES-P256, ECIES-X25519 or RSA-2048) into the "
                 "secure element of every board that holds none, as a factory would")
      ->check(CLI::ExistingFile);
  app.add_flag("-v,--verbose", verbose, "Log agent activity to stderr");
  std::vector<std::string> powered_off;
  app.add_option("--power-off", powered_off,
                 "Keep the board with this UID switched off: no socket, no agent; listed as 'UID off' (repeatable)")
      ->type_name("UID");
  // Not an option: the man page is written from the tree above (scripts/generate.sh, the packages).
  if (argc == 2 && std::string_view(argv[1]) == "--man-page") {
    std::cout << emu::manual_page(app);
    return 0;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  shaping.latency = std::chrono::microseconds(latency_us);
  if (drop_after) faults.drop_after_bytes = drop_after;
  if (power_loss_at) board_options.power_loss_at = power_loss_at;
  for (const auto& text : fail_commands) faults.fail_commands.push_back(emu::parse_group_command(text));

  fs::create_directories(dir);
  auto root = emu::load_or_create_vendor_root(dir);
  if (print_root) {
    std::cout << root.cert_pem();
    return 0;
  }

  // Block the stop signals before starting threads so only sigwait below sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::vector<std::unique_ptr<emu::Board>> boards;
  auto paths = existing_boards(dir);
  for (int i = 0; i < count; ++i) {
    if (i < static_cast<int>(paths.size())) boards.push_back(emu::Board::open(paths[static_cast<std::size_t>(i)], root, board_options));
    else boards.push_back(emu::Board::create(dir, root, board_options, i));
    if (!encryption_key.empty() && !boards.back()->has_encryption_key())
      boards.back()->factory_install_encryption_key(encryption_key);
  }
  std::vector<std::unique_ptr<emu::BoardServer>> servers;
  std::vector<std::unique_ptr<emu::SerialBoardServer>> serial_servers;
  auto is_off = [&powered_off](const emu::Board& board) {
    return std::find(powered_off.begin(), powered_off.end(), board.uid()) != powered_off.end();
  };
  for (auto& board : boards) {
    if (is_off(*board)) {
      std::cout << board->uid() << " off\n";
      continue;
    }
    if (serial) {
      auto link = fs::path(dir) / (board->uid() + ".tty");
      serial_servers.push_back(std::make_unique<emu::SerialBoardServer>(*board, link));
      std::cout << board->uid() << ' ' << link.string() << '\n';
      continue;
    }
    auto socket = fs::path(dir) / (board->uid() + ".sock");
    servers.push_back(std::make_unique<emu::BoardServer>(*board, socket, shaping, faults));
    servers.back()->on_power_loss = [] { std::_Exit(75); };
    servers.back()->start();
    std::cout << board->uid() << ' ' << socket.string() << '\n';
  }
  std::unique_ptr<emu::AgentScheduler> agents;
  if (agent) {
    emu::AgentOptions options;
    options.interval = std::chrono::milliseconds(static_cast<long long>(check_in_interval * 1000));
    if (!fail_version.empty()) options.fail_version = fail_version;
    options.verbose = verbose;
    options.on_power_loss = [] { std::_Exit(75); };
    std::vector<emu::Board*> all;
    for (auto& board : boards)
      if (!is_off(*board)) all.push_back(board.get());
    agents = std::make_unique<emu::AgentScheduler>(all, options);
    agents->start();
  }
  std::cout << "ready" << std::endl;

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  agents.reset();   // lets running check-ins finish
  servers.clear();  // stops threads, removes sockets
  serial_servers.clear();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const Error& e) {
    std::cerr << "kiln-board-emu: error: " << e.what() << '\n';
    if (!e.hint().empty()) std::cerr << "  hint: " << e.hint() << '\n';
    return static_cast<int>(e.code());
  } catch (const std::exception& e) {
    std::cerr << "kiln-board-emu: error: " << e.what() << '\n';
    return 1;
  }
}
