// usbfs ioctl handling for the emulated USB board (the model: libusb's tests/umockdev.c).
#include "tests/umockdev/usb_board.hpp"

#include <linux/ioctl.h>
#include <linux/usbdevice_fs.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace kiln::test {
namespace {

constexpr unsigned char bulk_out = 0x01;
constexpr unsigned char bulk_in = 0x81;

Bytes descriptors() {
  return {
      // device: USB 2.0, VID 1209, PID 4b4e, strings 1/2/3, one configuration
      0x12, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x40, 0x09, 0x12, 0x4e, 0x4b, 0x00, 0x01, 0x01, 0x02, 0x03, 0x01,
      // configuration 1: one interface, 32 bytes in total
      0x09, 0x02, 0x20, 0x00, 0x01, 0x01, 0x00, 0x80, 0x32,
      // interface 0: vendor specific (0xff), two endpoints
      0x09, 0x04, 0x00, 0x00, 0x02, 0xff, 0x00, 0x00, 0x00,
      // bulk OUT 0x01 and bulk IN 0x81, 64-byte packets
      0x07, 0x05, bulk_out, 0x02, 0x40, 0x00, 0x00,
      0x07, 0x05, bulk_in, 0x02, 0x40, 0x00, 0x00};
}

Bytes string_descriptor(const std::string& text) {
  Bytes out{static_cast<std::uint8_t>(2 + 2 * text.size()), 0x03};
  for (char c : text) {
    out.push_back(static_cast<std::uint8_t>(c));
    out.push_back(0);
  }
  return out;
}

usbdevfs_urb* urb_of(UMockdevIoctlData* data) { return reinterpret_cast<usbdevfs_urb*>(data->data); }

}  // namespace

UsbBoard::UsbBoard(emu::Board& board, bool plugged) : board_(board) {
  testbed_ = umockdev_testbed_new();
  std::string root = umockdev_testbed_get_root_dir(testbed_);
  std::filesystem::create_directories(root + "/dev/bus/usb/001");
  std::ofstream(root + "/dev/bus/usb/001/002").close();

  handler_ = umockdev_ioctl_base_new();
  g_signal_connect(handler_, "handle-ioctl", G_CALLBACK(on_ioctl), this);
  GError* error = nullptr;
  if (!umockdev_testbed_attach_ioctl(testbed_, "/dev/bus/usb/001/002", handler_, &error))
    throw std::runtime_error(std::string("attach_ioctl: ") + (error ? error->message : "failed"));
  if (plugged) plug_in();
}

void UsbBoard::plug_in() {
  std::string serial = board_.uid() + "\n";
  gchar* sys = umockdev_testbed_add_device(testbed_, "usb", "1-1", nullptr,
                                           "busnum", "1\n", "devnum", "2\n", "idVendor", "1209\n", "idProduct",
                                           "4b4e\n", "speed", "12\n", "dev", "189:1\n", "bConfigurationValue", "1\n",
                                           "serial", serial.c_str(), nullptr,
                                           "DEVNAME", "/dev/bus/usb/001/002", "DEVTYPE", "usb_device", "BUSNUM", "001",
                                           "DEVNUM", "002", "ID_SERIAL_SHORT", board_.uid().c_str(), nullptr);
  if (!sys) throw std::runtime_error("umockdev_testbed_add_device failed");
  Bytes d = descriptors();
  umockdev_testbed_set_attribute_binary(testbed_, sys, "descriptors", d.data(), static_cast<gssize>(d.size()));
  // The add uevent fired inside add_device, before the descriptors existed: a listener (libusb's
  // hotplug monitor in a running kiln) could not read the device then. Announce it again, complete.
  umockdev_testbed_uevent(testbed_, sys, "add");
  g_free(sys);
}

UsbBoard::~UsbBoard() {
  {
    std::lock_guard lock(mutex_);
    for (auto& u : waiting_in_) finish(u, -ENODEV, 0);
    for (auto& u : completed_) {
      umockdev_ioctl_data_unref(u.buffer);
      umockdev_ioctl_data_unref(u.urb);
    }
    completed_.clear();
  }
  g_clear_object(&testbed_);
  g_clear_object(&handler_);
}

void UsbBoard::unplug() {
  std::lock_guard lock(mutex_);
  unplug_locked();
}

void UsbBoard::unplug_after_bytes(std::size_t bytes) {
  std::lock_guard lock(mutex_);
  unplug_after_ = bytes;
  bytes_from_host_ = 0;
}

void UsbBoard::replug() {
  std::lock_guard lock(mutex_);
  unplugged_ = false;
  unplug_after_ = 0;
  from_host_ = PacketAssembler();
  to_host_.clear();
}

void UsbBoard::unplug_locked() {
  unplugged_ = true;
  while (!waiting_in_.empty()) {
    finish(waiting_in_.front(), -ENODEV, 0);
    waiting_in_.pop_front();
  }
}

gboolean UsbBoard::on_ioctl(UMockdevIoctlBase*, UMockdevIoctlClient* client, gpointer self) {
  return static_cast<UsbBoard*>(self)->handle(client);
}

void UsbBoard::finish(PendingUrb urb, int status, int actual_length) {
  urb_of(urb.urb)->status = status;
  urb_of(urb.urb)->actual_length = actual_length;
  completed_.push_back(urb);
}

gboolean UsbBoard::handle(UMockdevIoctlClient* client) {
  std::lock_guard lock(mutex_);
  auto request = umockdev_ioctl_client_get_request(client);
  UMockdevIoctlData* arg = umockdev_ioctl_client_get_arg(client);
  switch (request) {
    case USBDEVFS_GET_CAPABILITIES: {
      UMockdevIoctlData* caps = umockdev_ioctl_data_resolve(arg, 0, sizeof(guint32), nullptr);
      *reinterpret_cast<guint32*>(caps->data) = USBDEVFS_CAP_BULK_CONTINUATION | USBDEVFS_CAP_NO_PACKET_SIZE_LIM |
                                                USBDEVFS_CAP_REAP_AFTER_DISCONNECT | USBDEVFS_CAP_ZERO_PACKET;
      umockdev_ioctl_data_unref(caps);
      umockdev_ioctl_client_complete(client, 0, 0);
      return TRUE;
    }
    case USBDEVFS_GETDRIVER:
    case USBDEVFS_IOCTL:
      umockdev_ioctl_client_complete(client, -1, ENODATA);
      return TRUE;
    case USBDEVFS_CLAIMINTERFACE:
    case USBDEVFS_RELEASEINTERFACE:
    case USBDEVFS_CLEAR_HALT:
    case USBDEVFS_RESET:
    case USBDEVFS_RESETEP:
    case USBDEVFS_SETINTERFACE:
      umockdev_ioctl_client_complete(client, unplugged_ ? -1 : 0, unplugged_ ? ENODEV : 0);
      return TRUE;
    case USBDEVFS_SUBMITURB:
      if (unplugged_) {
        umockdev_ioctl_client_complete(client, -1, ENODEV);
        return TRUE;
      }
      submit(client, arg);
      return TRUE;
    case USBDEVFS_REAPURB:
    case USBDEVFS_REAPURBNDELAY: {
      if (completed_.empty()) {
        umockdev_ioctl_client_complete(client, -1, unplugged_ ? ENODEV : EAGAIN);
        return TRUE;
      }
      PendingUrb urb = completed_.front();
      completed_.pop_front();
      UMockdevIoctlData* pointer = umockdev_ioctl_data_resolve(arg, 0, sizeof(gpointer), nullptr);
      umockdev_ioctl_data_set_ptr(pointer, 0, urb.urb);
      umockdev_ioctl_client_complete(client, 0, 0);
      umockdev_ioctl_data_unref(pointer);
      umockdev_ioctl_data_unref(urb.buffer);
      umockdev_ioctl_data_unref(urb.urb);
      return TRUE;
    }
    case USBDEVFS_DISCARDURB: {
      gulong address = reinterpret_cast<gulong>(*reinterpret_cast<void**>(arg->data));
      for (auto it = waiting_in_.begin(); it != waiting_in_.end(); ++it) {
        if (it->urb->client_addr != address) continue;
        finish(*it, -ENOENT, 0);
        waiting_in_.erase(it);
        umockdev_ioctl_client_complete(client, 0, 0);
        return TRUE;
      }
      umockdev_ioctl_client_complete(client, -1, EINVAL);
      return TRUE;
    }
    default:
      return FALSE;
  }
}

void UsbBoard::submit(UMockdevIoctlClient* client, UMockdevIoctlData* arg) {
  UMockdevIoctlData* urb_data = umockdev_ioctl_data_resolve(arg, 0, sizeof(usbdevfs_urb), nullptr);
  usbdevfs_urb* urb = urb_of(urb_data);
  UMockdevIoctlData* buffer =
      umockdev_ioctl_data_resolve(urb_data, offsetof(usbdevfs_urb, buffer), static_cast<gsize>(urb->buffer_length), nullptr);
  PendingUrb pending{urb_data, buffer};
  umockdev_ioctl_client_complete(client, 0, 0);
  if (urb->type == USBDEVFS_URB_TYPE_CONTROL) {
    answer_control(pending);
  } else if (urb->endpoint == bulk_out) {
    bytes_from_host_ += static_cast<std::size_t>(urb->buffer_length);
    if (unplug_after_ && bytes_from_host_ >= unplug_after_) {
      finish(pending, -ENODEV, 0);
      unplug_locked();
      return;
    }
    from_host_.append(ByteView(buffer->data, static_cast<std::size_t>(urb->buffer_length)));
    while (auto packet = from_host_.next()) {
      auto reply = board_.handle_packet(*packet);
      if (reply.packet) to_host_.push_back(std::move(*reply.packet));
      if (reply.reset_after) board_.boot();
    }
    finish(pending, 0, urb->buffer_length);
  } else {
    waiting_in_.push_back(pending);
  }
  fill_in_urbs();
}

void UsbBoard::answer_control(PendingUrb urb) {
  const std::uint8_t* setup = urb.buffer->data;
  std::size_t length = urb_of(urb.urb)->buffer_length;
  Bytes reply;
  if (length >= 8 && setup[0] == 0x80 && setup[1] == 0x06 && setup[3] == 0x03) {  // GET_DESCRIPTOR(STRING)
    switch (setup[2]) {
      case 0: reply = {0x04, 0x03, 0x09, 0x04}; break;  // language: en-US
      case 1: reply = string_descriptor("kiln"); break;
      case 2: reply = string_descriptor("kiln emulated board"); break;
      case 3: reply = string_descriptor(board_.uid()); break;
      default: break;
    }
  }
  std::size_t wanted = length >= 8 ? static_cast<std::size_t>(setup[6] | (setup[7] << 8)) : 0;
  std::size_t n = std::min({reply.size(), wanted, length >= 8 ? length - 8 : 0});
  if (n) std::memcpy(urb.buffer->data + 8, reply.data(), n);
  finish(urb, reply.empty() ? -EPIPE : 0, static_cast<int>(n));
}

void UsbBoard::fill_in_urbs() {
  while (!waiting_in_.empty() && !to_host_.empty()) {
    PendingUrb urb = waiting_in_.front();
    waiting_in_.pop_front();
    Bytes& packet = to_host_.front();
    std::size_t n = std::min(packet.size(), static_cast<std::size_t>(urb_of(urb.urb)->buffer_length));
    std::memcpy(urb.buffer->data, packet.data(), n);
    packet.erase(packet.begin(), packet.begin() + static_cast<std::ptrdiff_t>(n));
    if (packet.empty()) to_host_.pop_front();
    finish(urb, 0, static_cast<int>(n));
  }
}

}  // namespace kiln::test
