// MCUboot image compression: raw LZMA2 with imgtool's settings (optionally behind the ARM-Thumb BCJ filter),
// a 2-byte properties header in front, and a bounded decoder for checking and installing such images.
#pragma once

#include <cstdint>
#include <functional>

#include "core/bytes.hpp"

namespace kiln::mcuboot {

// Header flags.
constexpr std::uint32_t flag_compressed_lzma1 = 0x200;
constexpr std::uint32_t flag_compressed_lzma2 = 0x400;
constexpr std::uint32_t flag_compressed_arm_thumb = 0x800;
constexpr std::uint32_t compression_flags = flag_compressed_lzma1 | flag_compressed_lzma2 | flag_compressed_arm_thumb;

// Protected TLVs describing the decompressed image.
namespace tlv {
constexpr std::uint16_t decomp_size = 0x70;
constexpr std::uint16_t decomp_sha = 0x71;
constexpr std::uint16_t decomp_signature = 0x72;
constexpr std::uint16_t comp_dec_size = 0x73;
}  // namespace tlv

enum class Compression { none, lzma2, lzma2_arm_thumb };

// imgtool's LZMA2 settings (main.py): preset 9, dictionary 128 KiB, lc 3, lp 1, pb 2.
constexpr std::uint32_t lzma2_dict_size = 131072;
// The largest dictionary kiln's decoder accepts (a hostile header byte may ask for 4 GiB).
constexpr std::uint32_t max_decoder_dict_size = 16u << 20;

// The 2-byte header: dictionary size code, then (pb * 5 + lp) * 9 + lc.
Bytes lzma2_header();

// The dictionary the decoder allocates for a stream whose header declares `declared` bytes and whose output
// is at most `max_output` bytes: the smaller of the two (at least liblzma's 4 KiB minimum), since no
// back-reference reaches before the start of the output. A hostile header cannot make it allocate more.
std::uint32_t decoder_dict_size(std::uint64_t declared, std::uint64_t max_output);

// Streaming compressor: feed input, collect the raw stream (without the 2-byte header).
class Compressor {
 public:
  explicit Compressor(Compression mode);
  ~Compressor();
  Compressor(const Compressor&) = delete;
  Compressor& operator=(const Compressor&) = delete;
  void update(ByteView data);
  // Ends the stream; returns everything compressed.
  Bytes finish();

 private:
  void run(ByteView data, bool finish);
  void* stream_;  // lzma_stream*
  Bytes out_;
};

// Decompresses `header_and_stream` (2-byte header + raw LZMA2, as an image payload holds it), with the
// ARM-Thumb filter when `arm_thumb`, handing the output to `sink` in pieces. Throws
// Error(verification_failed) for a bad header, a dictionary larger than max_decoder_dict_size, a
// corrupt stream, one that ends early, or output beyond `max_output` bytes (checked before it is handed on).
// The decoder's dictionary is decoder_dict_size(declared, max_output), so its memory follows `max_output`.
std::uint64_t decompress(ByteView header_and_stream, bool arm_thumb, std::uint64_t max_output,
                         const std::function<void(ByteView)>& sink);

}  // namespace kiln::mcuboot
