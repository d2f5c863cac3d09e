// Intel HEX reading and writing for images that build systems hand over as .hex files.
#include "signing/intel_hex.hpp"

#include <algorithm>
#include <map>

#include <fmt/format.h>

#include "core/error.hpp"

namespace kiln {
namespace {

Error hex_error(std::size_t line, const std::string& why) {
  return Error(ExitCode::failure, fmt::format("invalid Intel HEX at line {}: {}", line, why),
               "check that the file is a complete Intel HEX file");
}

// Appends one record: ':', then byte count, address, type, data and checksum as uppercase hex digit pairs
// (as IntelHex writes), and a line feed. Written digit by digit: a 64 MiB image is four million records.
void put_record(std::string& out, std::uint8_t type, std::uint16_t address, ByteView data) {
  static constexpr char digits[] = "0123456789ABCDEF";
  auto put = [&out](std::uint8_t b) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 0xf]);
  };
  auto count = static_cast<std::uint8_t>(data.size());
  auto high = static_cast<std::uint8_t>(address >> 8);
  auto low = static_cast<std::uint8_t>(address);
  std::uint8_t sum = static_cast<std::uint8_t>(count + high + low + type);
  out.push_back(':');
  put(count);
  put(high);
  put(low);
  put(type);
  for (auto b : data) {
    put(b);
    sum = static_cast<std::uint8_t>(sum + b);
  }
  put(static_cast<std::uint8_t>(-sum));
  out.push_back('\n');
}

}  // namespace

bool is_intel_hex_path(std::string_view path) {
  auto dot = path.rfind('.');
  if (dot == std::string_view::npos || path.find('/', dot) != std::string_view::npos) return false;
  std::string ext(path.substr(dot + 1));
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == "hex";
}

HexImage parse_intel_hex(std::string_view text, std::uint64_t max_span, std::string_view limit) {
  std::map<std::uint64_t, Bytes> runs;  // start address -> bytes, as read
  std::uint64_t upper = 0;
  std::size_t line_no = 0;
  bool ended = false;
  std::size_t pos = 0;
  while (pos < text.size() && !ended) {
    auto eol = text.find('\n', pos);
    std::string_view line = text.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
    pos = eol == std::string_view::npos ? text.size() : eol + 1;
    ++line_no;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    if (line.empty()) continue;
    if (line[0] != ':') throw hex_error(line_no, "a record must start with ':'");
    Bytes record;
    try {
      record = from_hex(line.substr(1));
    } catch (const Error&) {
      throw hex_error(line_no, "the record is not an even number of hex digits");
    }
    if (record.size() < 5 || record.size() != std::size_t{record[0]} + 5)
      throw hex_error(line_no, "the record length does not match its byte count");
    std::uint8_t sum = 0;
    for (auto b : record) sum = static_cast<std::uint8_t>(sum + b);
    if (sum != 0) throw hex_error(line_no, "bad checksum");
    std::uint16_t address = static_cast<std::uint16_t>((record[1] << 8) | record[2]);
    std::uint8_t type = record[3];
    ByteView data(record.data() + 4, record[0]);
    switch (type) {
      case 0x00: {
        // Two records at one address would be concatenated here and shift every byte after them.
        auto& run = runs[upper + address];
        if (!run.empty() && !data.empty())
          throw Error(ExitCode::failure, fmt::format("Intel HEX data overlaps at address {:#x} (line {})",
                                                     upper + address, line_no),
                      "the file writes some addresses twice");
        run.insert(run.end(), data.begin(), data.end());
        break;
      }
      case 0x01:
        ended = true;
        break;
      case 0x02:
        if (data.size() != 2) throw hex_error(line_no, "extended segment address record needs 2 bytes");
        upper = static_cast<std::uint64_t>((data[0] << 8) | data[1]) << 4;
        break;
      case 0x04:
        if (data.size() != 2) throw hex_error(line_no, "extended linear address record needs 2 bytes");
        upper = static_cast<std::uint64_t>((data[0] << 8) | data[1]) << 16;
        break;
      case 0x03:
      case 0x05:
        break;  // start addresses: imgtool drops them too
      default:
        throw hex_error(line_no, fmt::format("unknown record type {:02x}", type));
    }
  }
  if (!ended) throw hex_error(line_no, "missing end-of-file record");
  HexImage image;
  if (runs.empty()) return image;
  std::uint64_t low = runs.begin()->first;
  std::uint64_t high = 0;
  for (auto& [addr, bytes] : runs) high = std::max(high, addr + bytes.size());
  // Refuse to allocate gigabytes for a file that puts two bytes 4 GiB apart: the gap would be
  // filled with 0xFF, so check the span before any of it exists.
  if (high - low > max_span || high > 0x100000000ull) {
    std::string bound = limit.empty() ? fmt::format("the {} MiB limit for one image", max_span >> 20)
                                      : fmt::format("{} ({} bytes)", limit, max_span);
    // The run just before the widest gap names where the data stops and starts again.
    std::uint64_t gap_from = low, gap_to = low, widest = 0, end = low;
    for (auto& [addr, bytes] : runs) {
      if (addr > end && addr - end > widest) {
        widest = addr - end;
        gap_from = end;
        gap_to = addr;
      }
      end = std::max(end, addr + bytes.size());
    }
    throw Error(ExitCode::failure,
                fmt::format("Intel HEX data spans {:#x}..{:#x} ({} bytes), more than {}{}", low, high, high - low, bound,
                            widest > 0 ? fmt::format("; nothing is written between {:#x} and {:#x}", gap_from, gap_to)
                                       : std::string()),
                "a slot image is contiguous: split the file, or sign only the part that goes into the slot");
  }
  image.base_address = static_cast<std::uint32_t>(low);
  image.data.assign(static_cast<std::size_t>(high - low), 0xff);
  std::uint64_t covered_to = low;
  for (auto& [addr, bytes] : runs) {
    if (addr < covered_to)
      throw Error(ExitCode::failure, fmt::format("Intel HEX data overlaps at address {:#x}", addr),
                  "the file writes some addresses twice");
    std::copy(bytes.begin(), bytes.end(), image.data.begin() + static_cast<std::ptrdiff_t>(addr - low));
    covered_to = addr + bytes.size();
  }
  return image;
}

std::string format_intel_hex(std::span<const HexSegment> segments) {
  std::string out;
  // Like IntelHex, only files reaching past 64 KiB get extended linear address records.
  std::uint64_t end = 0;
  std::size_t bytes = 0;
  for (const auto& segment : segments) {
    end = std::max(end, std::uint64_t{segment.address} + segment.data.size());
    bytes += segment.data.size();
  }
  // Two digits a byte, and about 12 characters of framing per 16-byte record (plus the address records).
  out.reserve(bytes * 2 + (bytes / 16 + 2 * segments.size() + 2) * 12 + ((bytes >> 16) + segments.size() + 1) * 16);
  std::uint64_t high_written = end > 0x10000 ? ~0ull : 0;
  for (const auto& segment : segments) {
    std::uint64_t address = segment.address;
    std::size_t done = 0;
    while (done < segment.data.size()) {
      std::uint64_t high = address >> 16;
      if (high != high_written) {
        Bytes ela = {static_cast<std::uint8_t>(high >> 8), static_cast<std::uint8_t>(high)};
        put_record(out, 0x04, 0, ela);
        high_written = high;
      }
      std::size_t to_boundary = 0x10000 - (address & 0xffff);
      std::size_t n = std::min({std::size_t{16}, segment.data.size() - done, to_boundary});
      put_record(out, 0x00, static_cast<std::uint16_t>(address & 0xffff), segment.data.subspan(done, n));
      done += n;
      address += n;
    }
  }
  out += ":00000001FF\n";
  return out;
}

}  // namespace kiln
