// liblzma raw LZMA2 encoder and bounded decoder for MCUboot's compressed images.
#include "signing/image_compression.hpp"

#include <lzma.h>

#include <algorithm>

#include <fmt/format.h>

#include "core/error.hpp"

namespace kiln::mcuboot {
namespace {

constexpr std::uint32_t lzma2_lc = 3;
constexpr std::uint32_t lzma2_lp = 1;
constexpr std::uint32_t lzma2_pb = 2;
constexpr std::uint32_t lzma2_preset = 9;
constexpr std::size_t out_chunk = 64 * 1024;

lzma_stream* as_stream(void* p) {
  return static_cast<lzma_stream*>(p);
}

Error bad_stream(std::string why) {
  return Error(ExitCode::verification_failed, fmt::format("the compressed payload is not valid: {}", why),
               "the image is truncated or was altered");
}

std::string lzma_text(lzma_ret ret) {
  switch (ret) {
    case LZMA_MEM_ERROR:
      return "out of memory";
    case LZMA_MEMLIMIT_ERROR:
      return "memory limit reached";
    case LZMA_FORMAT_ERROR:
    case LZMA_DATA_ERROR:
      return "corrupt LZMA2 data";
    case LZMA_OPTIONS_ERROR:
      return "unsupported LZMA2 options";
    case LZMA_BUF_ERROR:
      return "the stream ends early";
    default:
      return fmt::format("liblzma error {}", static_cast<int>(ret));
  }
}

}  // namespace

Bytes lzma2_header() {
  Bytes out;
  for (std::uint8_t i = 0; i < 40; ++i) {
    if (lzma2_dict_size <= (std::uint64_t{2u | (i & 1u)} << (i / 2 + 11))) {
      out.push_back(i);
      break;
    }
  }
  out.push_back(static_cast<std::uint8_t>((lzma2_pb * 5 + lzma2_lp) * 9 + lzma2_lc));
  return out;
}

Compressor::Compressor(Compression mode) : stream_(new lzma_stream(LZMA_STREAM_INIT)) {
  lzma_options_lzma options;
  if (lzma_lzma_preset(&options, lzma2_preset)) {
    delete as_stream(stream_);
    throw Error(ExitCode::failure, "liblzma does not know preset 9");
  }
  options.dict_size = lzma2_dict_size;
  options.lc = lzma2_lc;
  options.lp = lzma2_lp;
  lzma_filter filters[3];
  std::size_t n = 0;
  if (mode == Compression::lzma2_arm_thumb) filters[n++] = {LZMA_FILTER_ARMTHUMB, nullptr};
  filters[n++] = {LZMA_FILTER_LZMA2, &options};
  filters[n] = {LZMA_VLI_UNKNOWN, nullptr};
  lzma_ret ret = lzma_raw_encoder(as_stream(stream_), filters);
  if (ret != LZMA_OK) {
    delete as_stream(stream_);
    throw Error(ExitCode::failure, fmt::format("cannot start the LZMA2 encoder: {}", lzma_text(ret)));
  }
}

Compressor::~Compressor() {
  lzma_end(as_stream(stream_));
  delete as_stream(stream_);
}

void Compressor::run(ByteView data, bool finish) {
  lzma_stream* s = as_stream(stream_);
  s->next_in = data.data();
  s->avail_in = data.size();
  while (true) {
    std::size_t before = out_.size();
    out_.resize(before + out_chunk);
    s->next_out = out_.data() + before;
    s->avail_out = out_chunk;
    lzma_ret ret = lzma_code(s, finish ? LZMA_FINISH : LZMA_RUN);
    out_.resize(before + out_chunk - s->avail_out);
    if (ret == LZMA_STREAM_END) return;
    if (ret != LZMA_OK) throw Error(ExitCode::failure, fmt::format("LZMA2 compression failed: {}", lzma_text(ret)));
    if (!finish && s->avail_in == 0) return;
  }
}

void Compressor::update(ByteView data) {
  if (!data.empty()) run(data, false);
}

Bytes Compressor::finish() {
  run({}, true);
  return std::move(out_);
}

std::uint32_t decoder_dict_size(std::uint64_t declared, std::uint64_t max_output) {
  constexpr std::uint64_t liblzma_min = 4096;
  std::uint64_t size = std::min({declared, max_output, std::uint64_t{max_decoder_dict_size}});
  return static_cast<std::uint32_t>(std::max(size, liblzma_min));
}

std::uint64_t decompress(ByteView input, bool arm_thumb, std::uint64_t max_output,
                         const std::function<void(ByteView)>& sink) {
  if (input.size() < 2) throw bad_stream("it is shorter than the 2-byte LZMA2 header");
  std::uint8_t dict_code = input[0];
  if (dict_code > 40) throw bad_stream(fmt::format("dictionary size code {} is out of range (0..40)", dict_code));
  std::uint64_t dict_size = std::uint64_t{2u | (dict_code & 1u)} << (dict_code / 2 + 11);
  if (dict_size > max_decoder_dict_size)
    throw bad_stream(fmt::format("its {} KiB dictionary exceeds kiln's limit of {} KiB", dict_size / 1024,
                                 max_decoder_dict_size / 1024));
  std::uint8_t props = input[1];
  std::uint32_t lc = props % 9, lp = (props / 9) % 5, pb = props / 45;
  if (pb > 4 || lc + lp > 4) throw bad_stream(fmt::format("properties byte {:#04x} is invalid", props));

  lzma_options_lzma options{};
  // Bounded by the output too: a stream declaring 16 MiB for a 1 KiB image gets a 4 KiB dictionary.
  options.dict_size = decoder_dict_size(dict_size, max_output);
  options.lc = lc;
  options.lp = lp;
  options.pb = pb;
  lzma_filter filters[3];
  std::size_t n = 0;
  if (arm_thumb) filters[n++] = {LZMA_FILTER_ARMTHUMB, nullptr};
  filters[n++] = {LZMA_FILTER_LZMA2, &options};
  filters[n] = {LZMA_VLI_UNKNOWN, nullptr};
  // The decoder's memory is its dictionary (bounded above) plus a fixed part: checked, not assumed.
  std::uint64_t memory = lzma_raw_decoder_memusage(filters);
  if (memory == UINT64_MAX || memory > std::uint64_t{options.dict_size} + (4u << 20))
    throw bad_stream("the decoder would need more memory than kiln allows");

  lzma_stream stream = LZMA_STREAM_INIT;
  lzma_ret ret = lzma_raw_decoder(&stream, filters);
  if (ret != LZMA_OK) throw bad_stream(lzma_text(ret));
  struct End {
    lzma_stream* s;
    ~End() { lzma_end(s); }
  } end{&stream};
  stream.next_in = input.data() + 2;
  stream.avail_in = input.size() - 2;
  Bytes out(out_chunk);
  std::uint64_t total = 0;
  while (true) {
    stream.next_out = out.data();
    stream.avail_out = out.size();
    ret = lzma_code(&stream, LZMA_FINISH);
    std::size_t produced = out.size() - stream.avail_out;
    if (produced > max_output - total)
      throw bad_stream(fmt::format("it decompresses to more than the {} bytes the image declares", max_output));
    total += produced;
    if (produced) sink(ByteView(out.data(), produced));
    if (ret == LZMA_STREAM_END) break;
    if (ret != LZMA_OK) throw bad_stream(lzma_text(ret));
    if (produced == 0 && stream.avail_in == 0) throw bad_stream("the stream ends early");
  }
  if (stream.avail_in != 0) throw bad_stream(fmt::format("{} bytes follow the end of the stream", stream.avail_in));
  return total;
}

}  // namespace kiln::mcuboot
