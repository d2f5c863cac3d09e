// One emulated board: identity, secure element, flash slots with MCUboot semantics, the
// manufacturing state machine, and the SMP protocol engine that answers packets.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>

#include "core/bytes.hpp"
#include "emulator/secure_element.hpp"
#include "manifests/trust_update.hpp"
#include "transport/provisioning_group.hpp"
#include "transport/smp.hpp"

namespace kiln::emu {

// The installed firmware record: the SUIT manifest the running firmware was accepted with.
struct FirmwareRecord {
  std::uint64_t sequence = 0;  // 0: none
  Bytes manifest_digest;       // SHA-256 of the envelope; empty: none
};

// What the update agent needs to know about a board, read under the board's lock.
struct AgentView {
  ManufacturingState state = ManufacturingState::blank;
  bool has_device_key = false;
  std::vector<Bytes> chain;
  ServiceConfig config;  // includes manifest_key
  FirmwareRecord current, previous;
  std::string version;  // running (primary) image
  Bytes primary_hash;
  bool primary_confirmed = true;
  std::uint64_t slot_size = 0;  // the largest image the board can hold
  bool has_encryption_key = false;
  std::string last_boot_refusal;  // why MCUboot did not swap in the last pending image ("" none)
  // The boot-key hashes MCUboot accepts (the factory's one, then what trust updates installed) and the
  // installed trust version (0: none since the factory).
  std::vector<Bytes> boot_key_hashes;
  std::uint64_t trust_version = 0;
};

struct BoardOptions {
  std::uint64_t slot_size = 16u << 20;
  std::uint32_t buffer_size = 4096;  // reported as buf_size: largest packet the board accepts
  std::uint32_t buffer_count = 8;    // reported as buf_count
  std::optional<std::uint64_t> power_loss_at;  // flash bytes written before power is cut
};

// Thrown when --power-loss-at is reached during a slot write: the board stops mid-write.
struct PowerLoss : std::runtime_error {
  PowerLoss() : std::runtime_error("power lost during a flash write") {}
};

// The MCUboot header fields the emulator needs. A small local reader: swap it for the shared
// signing/mcuboot_image parser once that lands.
struct McubootHeaderFields {
  std::uint16_t header_size = 0;
  std::uint32_t image_size = 0;
  std::string version;  // "major.minor.revision" plus ".build" when build is non-zero
};
constexpr std::uint32_t mcuboot_magic = 0x96f3b83d;
std::optional<McubootHeaderFields> read_mcuboot_header(ByteView bytes);
// A small MCUboot-formatted image (unsigned): the firmware a new board ships with, and test data.
Bytes make_test_image(std::uint8_t major, std::uint8_t minor, std::uint16_t revision, std::size_t payload_size);

class Board {
 public:
  // Opens (or creates, with a fresh UID) the board in `board_dir` and boots it.
  static std::unique_ptr<Board> open(const std::filesystem::path& board_dir, const VendorRoot& root,
                                     BoardOptions options);
  static std::unique_ptr<Board> create(const std::filesystem::path& emu_dir, const VendorRoot& root,
                                       BoardOptions options, int index);
  ~Board();
  Board(const Board&) = delete;
  Board& operator=(const Board&) = delete;

  const std::string& uid() const { return uid_; }
  int index() const { return index_; }

  struct Reply {
    std::optional<Bytes> packet;  // nullopt: nothing to send (not a request)
    bool reset_after = false;     // reboot once the reply is on the wire
  };
  // One SMP request packet in, one response packet out. Malformed bodies get rc "invalid";
  // a header that cannot be parsed throws Error (the stream is out of step).
  Reply handle_packet(ByteView packet);
  // What a request body means to this board (tests call it without packets).
  smp::Body handle(const smp::Header& header, const smp::Body& request, bool& reset_after);

  // MCUboot's decision at power-up or reset: swap in a pending image, revert an unconfirmed
  // test image, or abandon a swap that lost power (the old image stays).
  void boot();

  ManufacturingState manufacturing_state() const;
  std::string primary_version() const;
  const std::filesystem::path& dir() const { return dir_; }

  // For the update agent running in the same process. Each takes the board's lock.
  AgentView agent_view() const;
  // Copies `image` into the secondary slot (flash writes: --power-loss-at applies) and marks it
  // pending for one test boot.
  void stage_test_image(const std::filesystem::path& image);
  // Reset: MCUboot runs (boot()).
  void reset();
  // The emulated factory installs a given image-encryption private key (PEM) into the secure element
  // (kiln-board-emu --encryption-key). Throws Error(usage) for a key MCUboot cannot decrypt with.
  void factory_install_encryption_key(const std::filesystem::path& pem);
  bool has_encryption_key() const { return secure_element_.has_encryption_key(); }
  // The secure element's image-encryption key (nullptr when it holds none); the private key stays inside.
  std::unique_ptr<mcuboot::ContentKeyOpener> encryption_key_opener() const;
  // What the bootloader would say of the image at `path`: nullopt when it can open (decrypt, decompress)
  // and check it, else the reason. Plain images (neither encrypted nor compressed) are not checked here.
  std::optional<std::string> bootloader_refusal(const std::filesystem::path& path) const;
  // Confirms the running image (as image state write confirm=true).
  void confirm_running();
  // The running firmware was accepted with this manifest: the current record becomes the previous one.
  void record_firmware(FirmwareRecord record);
  // A trust update (docs/key-rotation.md): checked against the trust in force (trust::check) and, when accepted,
  // installed: manifest keys and threshold replaced, boot-key set replaced, the board bound to its product.
  // Nothing changes when it is refused.
  trust::Decision apply_trust_update(ByteView update);
  trust::TrustState trust_state() const;

 private:
  Board(std::filesystem::path dir, const VendorRoot& root, BoardOptions options);
  struct State;
  void save();
  void write_flash(int fd, ByteView data);
  void copy_slot(const std::filesystem::path& from, const std::filesystem::path& to);
  smp::Body os_group(const smp::Header& header, const smp::Body& request, bool& reset_after);
  smp::Body image_group(const smp::Header& header, const smp::Body& request);
  smp::Body provisioning_group(const smp::Header& header, const smp::Body& request);
  smp::Body image_upload(const smp::Body& request);
  smp::Body image_state_body() const;
  // As MCUboot's img_mgmt: slot 1 is in use while it holds the image a test boot reverts to (the
  // running image is not confirmed) or an image marked for the next boot. Not erased or overwritten.
  bool secondary_in_use() const;
  smp::Body firmware_list() const;
  smp::Body install_manifest(const smp::Body& request);
  void add_firmware_record(smp::Body& body) const;

  std::filesystem::path dir_;
  BoardOptions options_;
  std::unique_ptr<State> state_;
  std::string uid_;
  int index_ = 0;
  SecureElement secure_element_;
  int secondary_fd_ = -1;
  std::uint64_t flash_written_ = 0;
  // The SMP server thread and the update agent both drive the board.
  mutable std::recursive_mutex mutex_;
};

}  // namespace kiln::emu
