// libFuzzer target: the SMP packet decoder must reject anything malformed without crashing,
// and whatever it accepts must survive an encode/decode round trip unchanged.
#include <cstdint>
#include <cstdlib>

#include "core/error.hpp"
#include "transport/smp.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kiln::ByteView input(data, size);
  try {
    auto frame = kiln::smp::decode_frame(input);
    kiln::Bytes again = kiln::smp::encode_frame(frame.header, frame.body);
    auto reparsed = kiln::smp::decode_frame(again);
    // Compare encodings, not values: a NaN float in the body never equals itself.
    if (kiln::smp::encode_frame(reparsed.header, reparsed.body) != again) std::abort();
    (void)kiln::smp::response_outcome(frame.body);
  } catch (const kiln::Error&) {
  }
  try {
    (void)kiln::smp::frame_size(input);
  } catch (const kiln::Error&) {
  }
  return 0;
}
