// libFuzzer target: the serial console frame decoder on arbitrary bytes (fed in two pieces).
#include <cstdint>

#include "core/error.hpp"
#include "transport/console_framing.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kiln::ConsoleFrameDecoder decoder;
  kiln::ByteView input(data, size);
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
  return 0;
}
