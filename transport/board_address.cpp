// Board addressing and discovery: emulator sockets from a directory, USB boards through libusb.
#include "transport/board_address.hpp"

#include <glob.h>

#include <algorithm>
#include <regex>
#include <strings.h>

#include <fmt/format.h>

#include "core/error.hpp"
#include "transport/provisioning_group.hpp"

namespace kiln {
namespace fs = std::filesystem;

std::string BoardAddress::text() const {
  switch (kind) {
    case Kind::emulator: return "emu:" + location;
    case Kind::usb: return "usb:" + location;
    case Kind::serial: return "serial:" + location;
  }
  return location;
}

std::optional<BoardAddress> parse_board_address(std::string_view text) {
  auto starts = [&](std::string_view prefix) { return text.substr(0, prefix.size()) == prefix; };
  BoardAddress address;
  if (starts("emu:")) {
    address.kind = BoardAddress::Kind::emulator;
    address.location = std::string(text.substr(4));
    address.uid_hint = fs::path(address.location).stem().string();
  } else if (starts("usb:")) {
    address.kind = BoardAddress::Kind::usb;
    address.location = std::string(text.substr(4));
    static const std::regex usb_path(R"(\d+-\d+(\.\d+)*)");
    if (!std::regex_match(address.location, usb_path))
      throw Error(ExitCode::usage, fmt::format("'{}' is not a USB address", text), "use usb:BUS-PORT[.PORT], like usb:1-2.4");
  } else if (starts("serial:")) {
    address.kind = BoardAddress::Kind::serial;
    address.location = std::string(text.substr(7));
  } else {
    return std::nullopt;
  }
  if (address.location.empty())
    throw Error(ExitCode::usage, fmt::format("board address '{}' has no location", text));
  return address;
}

std::vector<std::pair<std::uint16_t, std::uint16_t>> DiscoveryOptions::default_usb_ids() {
  // pid.codes test VID/PID used by kiln reference firmware, and Zephyr's default SMP/CDC device.
  return {{0x1209, 0x4b4e}, {0x2fe3, 0x0100}};
}

std::vector<std::pair<std::uint16_t, std::uint16_t>> parse_usb_ids(std::string_view text) {
  std::vector<std::pair<std::uint16_t, std::uint16_t>> ids;
  static const std::regex pair(R"(\s*([0-9a-fA-F]{1,4}):([0-9a-fA-F]{1,4})\s*)");
  std::size_t start = 0;
  while (start <= text.size()) {
    auto end = text.find(',', start);
    std::string item(text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    std::smatch m;
    if (!std::regex_match(item, m, pair))
      throw Error(ExitCode::usage, fmt::format("usb-ids: '{}' is not a VID:PID pair", item),
                  "write hex pairs separated by commas, like 1209:4b4e,2fe3:0100");
    ids.emplace_back(static_cast<std::uint16_t>(std::stoul(m[1], nullptr, 16)),
                     static_cast<std::uint16_t>(std::stoul(m[2], nullptr, 16)));
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return ids;
}

std::vector<BoardAddress> discover_boards(const DiscoveryOptions& options) {
  std::vector<BoardAddress> found;
  if (options.emu_dir && fs::is_directory(*options.emu_dir)) {
    for (const auto& entry : fs::directory_iterator(*options.emu_dir))
      if (entry.path().extension() == ".sock" && entry.is_socket())
        found.push_back({BoardAddress::Kind::emulator, entry.path().string(), entry.path().stem().string()});
      else if (entry.path().extension() == ".tty" && entry.is_character_file())  // kiln-board-emu --serial
        found.push_back({BoardAddress::Kind::serial, entry.path().string(), entry.path().stem().string()});
    std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.location < b.location; });
  }
  for (const auto& pattern : options.serial_patterns) {
    glob_t matches{};
    if (::glob(pattern.c_str(), 0, nullptr, &matches) == 0)
      for (std::size_t i = 0; i < matches.gl_pathc; ++i) {
        std::string path = matches.gl_pathv[i];
        bool known = std::any_of(found.begin(), found.end(), [&](const auto& b) { return b.location == path; });
        if (!known) found.push_back({BoardAddress::Kind::serial, path, ""});
      }
    ::globfree(&matches);
  }
  auto usb = discover_usb_boards(options.usb_ids);
  found.insert(found.end(), usb.begin(), usb.end());
  return found;
}

BoardAddress select_board(const std::optional<std::string>& board, const DiscoveryOptions& options) {
  if (board) {
    if (auto address = parse_board_address(*board)) return *address;
  }
  auto boards = discover_boards(options);
  if (board) {
    for (const auto& b : boards)
      if (!b.uid_hint.empty() && strcasecmp(b.uid_hint.c_str(), board->c_str()) == 0) return b;
    throw Error(ExitCode::board, fmt::format("no attached board has UID {}", *board),
                "run 'kiln board list' to see the attached boards");
  }
  if (boards.empty())
    throw Error(ExitCode::board, "no board attached",
                "connect a board over USB, or point KILN_EMU_DIR (config emu-dir) at a kiln-board-emu directory");
  if (boards.size() > 1) {
    std::string list;
    for (const auto& b : boards) list += "\n  " + b.text() + (b.uid_hint.empty() ? "" : "  (" + b.uid_hint + ")");
    throw Error(ExitCode::usage, fmt::format("{} boards are attached; choose one with --board:{}", boards.size(), list),
                "pass -b with an address or a UID from 'kiln board list'");
  }
  return boards.front();
}

std::unique_ptr<Link> open_link(const BoardAddress& address) {
  switch (address.kind) {
    case BoardAddress::Kind::emulator: return open_socket_link(address.location);
    case BoardAddress::Kind::usb: return open_usb_link(address);
    case BoardAddress::Kind::serial: return open_serial_link(address.location);
  }
  throw Error(ExitCode::usage, "unknown board address kind");
}

std::vector<BoardSummary> survey_boards(const DiscoveryOptions& options, std::chrono::milliseconds timeout) {
  std::vector<BoardSummary> out;
  for (auto& address : discover_boards(options)) {
    BoardSummary summary{address, address.uid_hint, {}, {}, {}};
    try {
      SmpClientOptions client_options;
      client_options.timeout = timeout;
      client_options.read_retries = 0;
      SmpClient client(open_link(address), client_options);
      auto identity = read_identity(client);
      summary.uid = identity.uid;
      summary.state = std::string(manufacturing_state_name(identity.state));
      for (const auto& slot : identity.firmware)
        if (slot.slot == 0) summary.firmware = slot.version;
    } catch (const Error& e) {
      summary.error = e.what();
    }
    out.push_back(std::move(summary));
  }
  return out;
}

}  // namespace kiln
