// An emulated board on an emulated USB bus: a umockdev testbed device whose usbfs ioctls
// (URBs on a vendor bulk interface) are answered by the emulator's SMP protocol engine.
#pragma once

#include <deque>
#include <mutex>
#include <string>

#include <umockdev.h>

#include "emulator/board.hpp"
#include "transport/link.hpp"

namespace kiln::test {

class UsbBoard {
 public:
  static constexpr std::uint16_t vendor_id = 0x1209;
  static constexpr std::uint16_t product_id = 0x4b4e;

  // Adds the device at bus 1 port 1 ("usb:1-1"), serial number = the board's UID; with
  // plugged = false only the testbed is made (child processes started now see the bus) and
  // plug_in() adds the device later (a hotplug "add" event).
  explicit UsbBoard(emu::Board& board, bool plugged = true);
  void plug_in();
  ~UsbBoard();
  UsbBoard(const UsbBoard&) = delete;
  UsbBoard& operator=(const UsbBoard&) = delete;

  std::string address() const { return "usb:1-1"; }
  // Model an unplug: from now on every URB completes with ENODEV.
  void unplug();
  // Unplug by itself once the host has sent this many bytes (mid-upload).
  void unplug_after_bytes(std::size_t bytes);
  // Plug back in: a fresh connection to the same board (which kept its state).
  void replug();

 private:
  struct PendingUrb {
    UMockdevIoctlData* urb;
    UMockdevIoctlData* buffer;
  };
  static gboolean on_ioctl(UMockdevIoctlBase* handler, UMockdevIoctlClient* client, gpointer self);
  gboolean handle(UMockdevIoctlClient* client);
  void submit(UMockdevIoctlClient* client, UMockdevIoctlData* arg);
  void answer_control(PendingUrb urb);
  void fill_in_urbs();
  void finish(PendingUrb urb, int status, int actual_length);
  void unplug_locked();

  emu::Board& board_;
  UMockdevTestbed* testbed_ = nullptr;
  UMockdevIoctlBase* handler_ = nullptr;
  std::mutex mutex_;
  PacketAssembler from_host_;
  std::deque<Bytes> to_host_;
  std::deque<PendingUrb> waiting_in_;
  std::deque<PendingUrb> completed_;
  bool unplugged_ = false;
  std::size_t bytes_from_host_ = 0;
  std::size_t unplug_after_ = 0;  // 0 = never
};

}  // namespace kiln::test
