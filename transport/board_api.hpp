// Typed calls for the standard MCUmgr groups a kiln board answers: OS (echo, reset, info,
// parameters) and Image (slot state, test/confirm, windowed resumable upload, erase).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "transport/smp_client.hpp"

namespace kiln {

namespace os_command {
constexpr std::uint8_t echo = 0;
constexpr std::uint8_t reset = 5;
constexpr std::uint8_t mcumgr_params = 6;
constexpr std::uint8_t info = 7;
}  // namespace os_command

namespace image_command {
constexpr std::uint8_t state = 0;
constexpr std::uint8_t upload = 1;
constexpr std::uint8_t erase = 5;
}  // namespace image_command

std::string echo(SmpClient& client, const std::string& text);
// Asks the board to reboot; the link drops afterwards (reconnect to talk again).
void reset_board(SmpClient& client);

struct McumgrParams {
  std::uint32_t buffer_size = 0;   // largest SMP packet the board accepts
  std::uint32_t buffer_count = 0;  // packets it can hold: the useful window
};
McumgrParams read_mcumgr_params(SmpClient& client);
// OS info string; format as in Zephyr ("a" = all fields).
std::string read_os_info(SmpClient& client, const std::string& format = "a");

struct ImageSlot {
  std::uint32_t image = 0;
  std::uint32_t slot = 0;
  std::string version;
  Bytes hash;
  bool bootable = false;
  bool pending = false;
  bool confirmed = false;
  bool active = false;
  bool permanent = false;
  // What the slot holds, when the board says (kiln-board-emu does; MCUmgr's img_mgmt does not): a body
  // still encrypted (MCUboot has not decrypted it), a payload still compressed.
  std::optional<bool> encrypted;
  std::optional<bool> compressed;
};
std::vector<ImageSlot> read_image_state(SmpClient& client);
// Marks the image with `hash` pending for the next boot: confirm=false tests it once (reverted
// unless confirmed after booting), confirm=true makes it permanent. An empty hash with
// confirm=true confirms the running image.
std::vector<ImageSlot> write_image_state(SmpClient& client, ByteView hash, bool confirm);
void erase_slot(SmpClient& client, std::uint32_t slot);

struct UploadOptions {
  std::uint32_t image = 0;      // MCUboot image number; the data lands in its secondary slot
  std::size_t chunk_size = 0;   // data bytes per packet; 0 = as large as the board's buffer allows
};
struct UploadResult {
  std::uint64_t size = 0;
  std::uint64_t resumed_from = 0;  // > 0 when the board already held the first bytes of this image
  std::uint64_t packets = 0;
  Bytes sha256;
  double seconds = 0;
};
using UploadProgress = std::function<void(std::uint64_t done, std::uint64_t total)>;
// Streams `path` to the board with up to client.window() packets in flight. A board that already
// holds part of the same image (same length and SHA-256) reports its offset and the upload
// continues from there.
UploadResult upload_image(SmpClient& client, const std::filesystem::path& path, const UploadOptions& options,
                          const UploadProgress& progress = {});

struct InstallOptions {
  UploadOptions upload;
  bool confirm = false;  // permanent instead of a test boot that reverts unless confirmed
  bool reset = false;    // reboot into it now
};
// The mark on an MCUboot image: one enum, one string mapping each way. none: nothing marked; test: slot 1 is
// swapped in for one test boot and reverted unless confirmed; permanent: swapped in for good; confirmed: the
// running image confirmed in place. kiln-board-emu keeps its slot 1's mark (none, test or permanent) as
// "pending" in its state file; kiln board install reports what it did as "mark".
enum class ImageMark { none, test, permanent, confirmed };
std::string image_mark_name(ImageMark mark);
std::optional<ImageMark> parse_image_mark(std::string_view text);

struct InstallResult {
  UploadResult upload;
  bool already_running = false;  // the board runs this image: nothing uploaded, marked or reset
  std::vector<ImageSlot> slots;  // slot state after marking the image pending
  bool reset = false;
};
// What install_image did with `confirm`: marked the upload permanent or test, or, when the board already ran the
// image, confirmed it or nothing.
ImageMark install_mark(const InstallResult& result, bool confirm);
// Upload, mark pending (test or permanent), and optionally reset: `kiln board upload`.
// Reads the board's slot state first and, before anything is erased:
//  - the board already runs this image: nothing to do (with confirm, confirms it);
//  - the board test-runs another image (not confirmed): Error(conflict), since slot 1 holds the
//    image it reverts to, the only fallback;
//  - slot 1 holds another image marked pending: Error(conflict);
//  - slot 1 holds this image, pending: no upload, marked again (and reset if asked).
InstallResult install_image(SmpClient& client, const std::filesystem::path& path, const InstallOptions& options,
                            const UploadProgress& progress = {});

}  // namespace kiln
