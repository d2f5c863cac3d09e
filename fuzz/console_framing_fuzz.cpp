// libFuzzer target for the serial console framing. Two invariants:
//  - the decoder on arbitrary bytes (fed in two pieces) never crashes and never loops;
//  - encode -> decode is an identity: the input, as an SMP packet, framed and fed back in pieces
//    of any size with console text before it, comes back exactly once and unchanged.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/error.hpp"
#include "transport/console_framing.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kiln::ByteView input(data, size);
  {
    kiln::ConsoleFrameDecoder decoder;
    std::size_t split = size ? data[0] % (size + 1) : 0;
    for (auto piece : {input.first(split), input.subspan(split)}) {
      decoder.feed(piece);
      for (int i = 0; i < 1000; ++i) {
        try {
          if (!decoder.next()) break;
        } catch (const kiln::Error&) {
        }
      }
    }
  }
  if (size == 0 || size > 4096) return 0;  // SMP packets are at most a few KiB
  std::string lines = "boot banner\r\n" + kiln::encode_console_frame(input);
  kiln::ConsoleFrameDecoder decoder;
  std::size_t step = 1 + data[0] % 97;
  int packets = 0;
  for (std::size_t at = 0; at < lines.size(); at += step) {
    std::string_view piece = std::string_view(lines).substr(at, step);
    decoder.feed(kiln::as_bytes(piece));
    while (auto packet = decoder.next()) {
      if (*packet != kiln::Bytes(input.begin(), input.end())) std::abort();
      ++packets;
    }
  }
  if (packets != 1) std::abort();
  return 0;
}
