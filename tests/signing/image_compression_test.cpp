// Tests for signing/image_compression: LZMA2 images decompress to what was compressed, and the decoder's
// dictionary (its memory) is bounded by the output the image declares, whatever the stream's header asks for.
#include <doctest/doctest.h>

#include <cstdint>
#include <random>

#include "core/error.hpp"
#include "signing/image_compression.hpp"

using namespace kiln;
using namespace kiln::mcuboot;

namespace {

// 100,000 bytes: a random 50,000-byte block twice, so the second half is back-references 50,000 bytes away.
Bytes repeating_payload() {
  std::mt19937 random(19);
  Bytes block(50000);
  for (auto& b : block) b = static_cast<std::uint8_t>(random());
  Bytes out = block;
  out.insert(out.end(), block.begin(), block.end());
  return out;
}

Bytes compressed(const Bytes& payload, Compression mode) {
  Compressor compressor(mode);
  compressor.update(payload);
  Bytes out = lzma2_header();
  Bytes stream = compressor.finish();
  out.insert(out.end(), stream.begin(), stream.end());
  return out;
}

Bytes decompressed(const Bytes& image, bool arm_thumb, std::uint64_t max_output) {
  Bytes out;
  std::uint64_t n = decompress(image, arm_thumb, max_output,
                               [&](ByteView piece) { out.insert(out.end(), piece.begin(), piece.end()); });
  CHECK(n == out.size());
  return out;
}

// The header's first byte for a dictionary of `size` bytes (2^n or 3 * 2^(n-1), as in LZMA2).
std::uint8_t dict_code(std::uint64_t size) {
  for (std::uint8_t i = 0; i <= 40; ++i)
    if (size <= (std::uint64_t{2u | (i & 1u)} << (i / 2 + 11))) return i;
  return 40;
}

}  // namespace

TEST_CASE("image compression: images decompress to what was compressed, with the dictionary bounded by the output") {
  Bytes payload = repeating_payload();
  for (Compression mode : {Compression::lzma2, Compression::lzma2_arm_thumb}) {
    CAPTURE(static_cast<int>(mode));
    Bytes image = compressed(payload, mode);
    CHECK(image.size() < payload.size() * 3 / 4);  // the repeat was found
    bool thumb = mode == Compression::lzma2_arm_thumb;
    // The declared size exactly: a 100,000-byte dictionary instead of the header's 128 KiB is enough.
    CHECK(decompressed(image, thumb, payload.size()) == payload);
    CHECK(decompressed(image, thumb, 1u << 30) == payload);
    CHECK_THROWS_WITH_AS(decompressed(image, thumb, payload.size() - 1), doctest::Contains("decompresses to more than"),
                         Error);
  }
}

TEST_CASE("image compression: the decoder's dictionary follows the output, not the header") {
  CHECK(decoder_dict_size(lzma2_dict_size, 100000) == 100000);
  CHECK(decoder_dict_size(lzma2_dict_size, 1u << 30) == lzma2_dict_size);
  CHECK(decoder_dict_size(max_decoder_dict_size, 1000) == 4096);  // liblzma's smallest
  CHECK(decoder_dict_size(std::uint64_t{3} << 31, std::uint64_t{1} << 40) == max_decoder_dict_size);

  // A stream whose header asks for the largest dictionary kiln accepts, for a 1 KiB output: it decodes
  // (with a 4 KiB dictionary) to the same bytes.
  Bytes payload(1024, 0x5a);
  Bytes image = compressed(payload, Compression::lzma2);
  image[0] = dict_code(max_decoder_dict_size);
  CHECK(decompressed(image, false, payload.size()) == payload);
}

TEST_CASE("image compression: a hostile header is refused cleanly") {
  Bytes image = compressed(Bytes(4096, 0x11), Compression::lzma2);
  SUBCASE("a 4 GiB dictionary") {
    image[0] = 40;
    CHECK_THROWS_WITH_AS(decompressed(image, false, 4096), doctest::Contains("exceeds kiln's limit"), Error);
  }
  SUBCASE("a dictionary just above the limit") {
    image[0] = static_cast<std::uint8_t>(dict_code(max_decoder_dict_size) + 1);
    CHECK_THROWS_WITH_AS(decompressed(image, false, 4096), doctest::Contains("exceeds kiln's limit"), Error);
  }
  SUBCASE("a size code out of range") {
    image[0] = 41;
    CHECK_THROWS_WITH_AS(decompressed(image, false, 4096), doctest::Contains("out of range"), Error);
  }
  SUBCASE("invalid properties") {
    image[1] = 225;
    CHECK_THROWS_WITH_AS(decompressed(image, false, 4096), doctest::Contains("properties byte"), Error);
  }
  SUBCASE("a truncated stream") {
    image.resize(image.size() / 2);
    CHECK_THROWS_AS(decompressed(image, false, 4096), Error);
  }
}
