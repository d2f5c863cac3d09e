// libFuzzer target: the SMP packet decoder must reject anything malformed without crashing,
// and whatever it accepts must survive an encode/decode round trip unchanged.
#include <cstdint>
#include <cstdlib>
#include <optional>

#include "cli/output.hpp"
#include "core/error.hpp"
#include "transport/board_api.hpp"
#include "transport/provisioning_group.hpp"
#include "transport/smp.hpp"
#include "transport/smp_client.hpp"

namespace {

// A board whose every answer is the fuzz input: the client's sequence matching and the typed
// readers of slot and manufacturing state must refuse it with Error(board), never crash.
class ReplayLink final : public kiln::Link {
 public:
  explicit ReplayLink(kiln::ByteView packet) : packet_(packet.begin(), packet.end()) {}
  void send(kiln::ByteView) override { pending_ = true; }
  std::optional<kiln::Bytes> receive(std::chrono::milliseconds) override {
    if (!pending_) return std::nullopt;
    pending_ = false;
    return packet_;
  }
  std::string address() const override { return "fuzz"; }

 private:
  kiln::Bytes packet_;
  bool pending_ = false;
};

// Whatever terminal_safe returns has no raw control byte.
void check_terminal_safe(std::string_view text) {
  for (unsigned char c : kiln::cli::terminal_safe(text))
    if (c < 0x20 || c == 0x7f) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kiln::ByteView input(data, size);
  std::optional<kiln::smp::Frame> frame;
  try {
    frame = kiln::smp::decode_frame(input);
  } catch (const kiln::Error&) {
  }
  if (frame) {
    // What decoded encodes, and that encoding decodes again (a throw is a finding). Compare encodings, not
    // values: a NaN float in the body never equals itself.
    kiln::Bytes again = kiln::smp::encode_frame(frame->header, frame->body);
    auto reparsed = kiln::smp::decode_frame(again);
    if (kiln::smp::encode_frame(reparsed.header, reparsed.body) != again) std::abort();
    try {
      (void)kiln::smp::response_outcome(frame->body);
    } catch (const kiln::Error&) {
    }
  }
  try {
    (void)kiln::smp::frame_size(input);
  } catch (const kiln::Error&) {
  }
  kiln::SmpClientOptions options;
  options.timeout = std::chrono::milliseconds(1);
  options.read_retries = 0;
  for (int reader = 0; reader < 2; ++reader) {
    try {
      kiln::SmpClient client(std::make_unique<ReplayLink>(input), options);
      if (reader == 0) {
        for (const auto& slot : kiln::read_image_state(client)) check_terminal_safe(slot.version);
      } else {
        check_terminal_safe(kiln::read_identity(client).uid);
      }
    } catch (const kiln::Error& e) {
      check_terminal_safe(e.what());
    }
  }
  check_terminal_safe(std::string_view(reinterpret_cast<const char*>(data), size));
  try {
    (void)kiln::cli::json_text(kiln::cli::Json(std::string(reinterpret_cast<const char*>(data), size)));
  } catch (const std::exception&) {
    std::abort();  // json output never throws on device text
  }
  return 0;
}
