// Link over USB bulk endpoints (vendor interface class 0xFF) through libusb-1.0.
#include <libusb.h>

#include <algorithm>
#include <atomic>
#include <set>

#include <fmt/format.h>

#include "core/error.hpp"
#include "transport/board_address.hpp"
#include "transport/smp.hpp"

namespace kiln {
namespace {

struct ContextFree {
  void operator()(libusb_context* c) const { libusb_exit(c); }
};
struct HandleFree {
  void operator()(libusb_device_handle* h) const { libusb_close(h); }
};
struct DeviceListFree {
  void operator()(libusb_device** list) const { libusb_free_device_list(list, 1); }
};
struct ConfigFree {
  void operator()(libusb_config_descriptor* c) const { libusb_free_config_descriptor(c); }
};

std::string location_of(libusb_device* device) {
  std::uint8_t ports[8];
  int n = libusb_get_port_numbers(device, ports, sizeof ports);
  std::string location = std::to_string(libusb_get_bus_number(device));
  for (int i = 0; i < n; ++i) location += (i == 0 ? "-" : ".") + std::to_string(ports[i]);
  return location;
}

struct BulkInterface {
  int number = -1;
  unsigned char out = 0;
  unsigned char in = 0;
};

// The first vendor-specific interface with one bulk OUT and one bulk IN endpoint.
BulkInterface find_bulk_interface(libusb_device* device) {
  libusb_config_descriptor* raw = nullptr;
  if (libusb_get_active_config_descriptor(device, &raw) != 0 && libusb_get_config_descriptor(device, 0, &raw) != 0)
    return {};
  std::unique_ptr<libusb_config_descriptor, ConfigFree> config(raw);
  for (int i = 0; i < config->bNumInterfaces; ++i) {
    const libusb_interface& interface = config->interface[i];
    for (int a = 0; a < interface.num_altsetting; ++a) {
      const libusb_interface_descriptor& alt = interface.altsetting[a];
      if (alt.bInterfaceClass != LIBUSB_CLASS_VENDOR_SPEC) continue;
      BulkInterface found{alt.bInterfaceNumber, 0, 0};
      for (int e = 0; e < alt.bNumEndpoints; ++e) {
        const libusb_endpoint_descriptor& ep = alt.endpoint[e];
        if ((ep.bmAttributes & LIBUSB_TRANSFER_TYPE_MASK) != LIBUSB_TRANSFER_TYPE_BULK) continue;
        if (ep.bEndpointAddress & LIBUSB_ENDPOINT_IN) found.in = ep.bEndpointAddress;
        else found.out = ep.bEndpointAddress;
      }
      if (found.in && found.out) return found;
    }
  }
  return {};
}

class UsbLink final : public Link {
 public:
  UsbLink(std::unique_ptr<libusb_context, ContextFree> context, std::unique_ptr<libusb_device_handle, HandleFree> handle,
          BulkInterface interface, std::string address)
      : context_(std::move(context)), handle_(std::move(handle)), interface_(interface), address_(std::move(address)) {}
  ~UsbLink() override {
    libusb_release_interface(handle_.get(), interface_.number);
    handle_.reset();
  }
  UsbLink(const UsbLink&) = delete;
  UsbLink& operator=(const UsbLink&) = delete;

  void send(ByteView packet) override {
    int transferred = 0;
    int rc = libusb_bulk_transfer(handle_.get(), interface_.out, const_cast<unsigned char*>(packet.data()),
                                  static_cast<int>(packet.size()), &transferred, 5000);
    if (rc != 0 || static_cast<std::size_t>(transferred) != packet.size()) throw failure(rc, "sending");
  }

  std::optional<Bytes> receive(std::chrono::milliseconds timeout) override {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      if (auto packet = assembler_.next()) return packet;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      unsigned char buffer[smp::header_size + smp::max_body_size];
      int transferred = 0;
      int rc = libusb_bulk_transfer(handle_.get(), interface_.in, buffer, sizeof buffer, &transferred,
                                    static_cast<unsigned>(left.count()));
      if (rc == LIBUSB_ERROR_TIMEOUT && transferred == 0) return std::nullopt;
      if (rc != 0 && rc != LIBUSB_ERROR_TIMEOUT) throw failure(rc, "receiving");
      assembler_.append(ByteView(buffer, static_cast<std::size_t>(transferred)));
    }
  }

  std::string address() const override { return address_; }

 private:
  Error failure(int rc, const char* what) const {
    if (rc == LIBUSB_ERROR_NO_DEVICE || rc == LIBUSB_ERROR_IO || rc == LIBUSB_ERROR_PIPE)
      return Error(ExitCode::board, fmt::format("board {} disconnected while {} ({})", address_, what, libusb_error_name(rc)),
                   "reconnect the board and run the command again; an interrupted upload resumes where it stopped");
    return Error(ExitCode::board, fmt::format("USB error {} board {}: {}", what, address_, libusb_error_name(rc)));
  }

  std::unique_ptr<libusb_context, ContextFree> context_;
  std::unique_ptr<libusb_device_handle, HandleFree> handle_;
  BulkInterface interface_;
  std::string address_;
  PacketAssembler assembler_;
};

}  // namespace

std::unique_ptr<Link> open_usb_link(const BoardAddress& address) {
  libusb_context* raw_context = nullptr;
  if (int rc = libusb_init(&raw_context); rc != 0)
    throw Error(ExitCode::board, fmt::format("cannot use USB: {}", libusb_error_name(rc)));
  std::unique_ptr<libusb_context, ContextFree> context(raw_context);
  libusb_device** raw_list = nullptr;
  ssize_t count = libusb_get_device_list(raw_context, &raw_list);
  if (count < 0) throw Error(ExitCode::board, fmt::format("cannot list USB devices: {}", libusb_error_name(static_cast<int>(count))));
  std::unique_ptr<libusb_device*, DeviceListFree> list(raw_list);
  for (ssize_t i = 0; i < count; ++i) {
    if (location_of(raw_list[i]) != address.location) continue;
    BulkInterface interface = find_bulk_interface(raw_list[i]);
    if (interface.number < 0)
      throw Error(ExitCode::board, fmt::format("USB device {} has no vendor-specific bulk interface", address.text()),
                  "is it running kiln-compatible firmware (SMP over USB bulk)?");
    libusb_device_handle* raw_handle = nullptr;
    if (int rc = libusb_open(raw_list[i], &raw_handle); rc != 0)
      throw Error(ExitCode::board, fmt::format("cannot open board {}: {}", address.text(), libusb_error_name(rc)),
                  rc == LIBUSB_ERROR_ACCESS ? "install a udev rule giving your user access to the device" : "");
    std::unique_ptr<libusb_device_handle, HandleFree> handle(raw_handle);
    libusb_set_auto_detach_kernel_driver(raw_handle, 1);
    if (int rc = libusb_claim_interface(raw_handle, interface.number); rc != 0)
      throw Error(ExitCode::board, fmt::format("cannot claim board {}: {}", address.text(), libusb_error_name(rc)),
                  "another program may be using it");
    return std::make_unique<UsbLink>(std::move(context), std::move(handle), interface, address.text());
  }
  throw Error(ExitCode::board, fmt::format("no USB device at {}", address.text()), "run 'kiln board list'");
}

std::vector<BoardAddress> discover_usb_boards(const std::vector<std::pair<std::uint16_t, std::uint16_t>>& usb_ids) {
  std::vector<BoardAddress> found;
  libusb_context* raw_context = nullptr;
  if (libusb_init(&raw_context) != 0) return found;  // no USB on this machine: nothing attached
  std::unique_ptr<libusb_context, ContextFree> context(raw_context);
  libusb_device** raw_list = nullptr;
  ssize_t count = libusb_get_device_list(raw_context, &raw_list);
  if (count < 0) return found;
  std::unique_ptr<libusb_device*, DeviceListFree> list(raw_list);
  for (ssize_t i = 0; i < count; ++i) {
    libusb_device_descriptor descriptor{};
    if (libusb_get_device_descriptor(raw_list[i], &descriptor) != 0) continue;
    bool wanted = std::any_of(usb_ids.begin(), usb_ids.end(), [&](auto id) {
      return id.first == descriptor.idVendor && id.second == descriptor.idProduct;
    });
    if (!wanted) continue;
    BoardAddress address{BoardAddress::Kind::usb, location_of(raw_list[i]), {}};
    libusb_device_handle* raw_handle = nullptr;
    if (descriptor.iSerialNumber && libusb_open(raw_list[i], &raw_handle) == 0) {
      std::unique_ptr<libusb_device_handle, HandleFree> handle(raw_handle);
      unsigned char serial[128] = {};
      if (libusb_get_string_descriptor_ascii(raw_handle, descriptor.iSerialNumber, serial, sizeof serial) > 0)
        address.uid_hint = reinterpret_cast<char*>(serial);
    }
    found.push_back(std::move(address));
  }
  return found;
}

struct UsbBoardWatch::State {
  std::vector<std::pair<std::uint16_t, std::uint16_t>> usb_ids;
  std::chrono::milliseconds poll_interval;
  std::unique_ptr<libusb_context, ContextFree> context;
  libusb_hotplug_callback_handle callback = 0;
  bool hotplug = false;
  std::atomic<bool> event{false};  // set by the hotplug callback
  std::chrono::steady_clock::time_point last_scan{};  // epoch: the first poll() enumerates
  bool last_by_event = false;
  std::set<std::string> attached;   // locations seen at the last scan

  std::vector<std::string> departed;  // locations unplugged since the last poll (hotplug events)

  // Runs inside libusb_handle_events, on the poll() thread. Only notes the event: enumeration
  // (which opens devices for their serial number) runs in poll().
  static int LIBUSB_CALL on_hotplug(libusb_context*, libusb_device* device, libusb_hotplug_event event, void* self) {
    auto* state = static_cast<State*>(self);
    if (event == LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT) state->departed.push_back(location_of(device));
    state->event = true;
    return 0;  // stay registered
  }
};

UsbBoardWatch::UsbBoardWatch(std::vector<std::pair<std::uint16_t, std::uint16_t>> usb_ids,
                             std::chrono::milliseconds poll_interval)
    : state_(std::make_unique<State>()) {
  state_->usb_ids = std::move(usb_ids);
  state_->poll_interval = poll_interval;
  libusb_context* raw_context = nullptr;
  if (libusb_init(&raw_context) != 0) return;  // no USB here: polling finds nothing, cheaply
  state_->context.reset(raw_context);
  if (!libusb_has_capability(LIBUSB_CAP_HAS_HOTPLUG)) return;
  auto events = static_cast<libusb_hotplug_event>(LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED | LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT);
  state_->hotplug = libusb_hotplug_register_callback(raw_context, events, static_cast<libusb_hotplug_flag>(0),
                                                     LIBUSB_HOTPLUG_MATCH_ANY, LIBUSB_HOTPLUG_MATCH_ANY,
                                                     LIBUSB_HOTPLUG_MATCH_ANY, &State::on_hotplug, state_.get(),
                                                     &state_->callback) == LIBUSB_SUCCESS;
}

UsbBoardWatch::~UsbBoardWatch() {
  if (state_->hotplug) libusb_hotplug_deregister_callback(state_->context.get(), state_->callback);
}

bool UsbBoardWatch::hotplug() const { return state_->hotplug; }

const char* UsbBoardWatch::last_cause() const { return state_->last_by_event ? "hotplug event" : "re-scan"; }

std::vector<BoardAddress> UsbBoardWatch::poll() {
  auto now = std::chrono::steady_clock::now();
  if (state_->hotplug) {
    timeval zero{0, 0};
    libusb_handle_events_timeout_completed(state_->context.get(), &zero, nullptr);
  }
  // Polling; with hotplug a slower re-scan too, in case events are not delivered (no udev daemon).
  bool by_event = state_->event.exchange(false);
  // A board unplugged and plugged in again between two scans is new again.
  for (const auto& location : state_->departed) state_->attached.erase(location);
  state_->departed.clear();
  bool rescan_due = now - state_->last_scan >= (state_->hotplug ? 5 : 1) * state_->poll_interval;
  std::vector<BoardAddress> arrived;
  if (!by_event && !rescan_due) return arrived;
  state_->last_scan = now;
  std::set<std::string> attached;
  for (auto& board : discover_usb_boards(state_->usb_ids)) {
    attached.insert(board.location);
    if (!state_->attached.count(board.location)) arrived.push_back(std::move(board));
  }
  state_->attached = std::move(attached);  // a board that left is new again when it comes back
  if (!arrived.empty()) state_->last_by_event = by_event;
  return arrived;
}

}  // namespace kiln
