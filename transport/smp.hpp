// MCUmgr SMP v2 packets: the 8-byte header, CBOR bodies (via libcbor) and error responses.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/bytes.hpp"

namespace kiln::smp {

// A decoded CBOR body. Byte strings are nlohmann binary values; map keys are text.
using Body = nlohmann::ordered_json;

enum class Op : std::uint8_t { read = 0, read_response = 1, write = 2, write_response = 3 };

constexpr std::size_t header_size = 8;
constexpr std::uint8_t smp_version_2 = 1;  // the "version" bits of SMP v2 packets
constexpr std::size_t max_body_size = 0xFFFF;
constexpr int max_body_depth = 16;

// Standard and kiln group numbers.
namespace group {
constexpr std::uint16_t os = 0;
constexpr std::uint16_t image = 1;
constexpr std::uint16_t kiln_provisioning = 64;
}  // namespace group

// MCUmgr generic result codes carried in a response's top-level "rc".
namespace rc {
constexpr int ok = 0;
constexpr int unknown = 1;
constexpr int no_memory = 2;
constexpr int invalid = 3;
constexpr int timeout = 4;
constexpr int no_entry = 5;
constexpr int bad_state = 6;
constexpr int message_too_big = 7;
constexpr int not_supported = 8;
constexpr int corrupt = 9;
constexpr int busy = 10;
constexpr int access_denied = 11;
}  // namespace rc

struct Header {
  Op op = Op::read;
  std::uint8_t version = smp_version_2;
  std::uint8_t flags = 0;
  std::uint16_t length = 0;  // body length in bytes
  std::uint16_t group = 0;
  std::uint8_t sequence = 0;
  std::uint8_t command = 0;
};

struct Frame {
  Header header;
  Body body;
};

bool is_response(Op op);
Op response_op(Op request);

// Header <-> 8 bytes (length, group big-endian). decode_header throws Error(board) on bad bits.
Bytes encode_header(const Header& header);
Header decode_header(ByteView bytes);

// CBOR body <-> JSON-like value. decode_body rejects truncation, trailing bytes, non-text map
// keys, indefinite-length strings, nesting deeper than max_body_depth and declared container
// sizes larger than the bytes left: it never trusts a length.
Bytes encode_body(const Body& body);
Body decode_body(ByteView bytes);

// A whole packet; encode_frame sets header.length from the body.
Bytes encode_frame(Header header, const Body& body);
Frame decode_frame(ByteView bytes);

// How many bytes the packet starting at `buffered` occupies, or nullopt if fewer than
// header_size bytes are buffered yet. Used by stream links to cut packets.
std::optional<std::size_t> frame_size(ByteView buffered);

// A response's outcome: rc (v1 style) or err {group, rc} (v2 group error). ok() when both absent or 0.
struct Outcome {
  int rc = 0;
  std::optional<std::uint16_t> group;  // set for group errors
  bool ok() const { return rc == 0; }
};
Outcome response_outcome(const Body& body);

// Builds the response bodies a server sends.
Body error_body(int rc);
Body group_error_body(std::uint16_t group, int group_rc);

// "invalid value (3)" style names for generic codes.
std::string rc_name(int code);

// Body accessors that throw Error(board) naming the missing or mistyped key.
std::uint64_t get_uint(const Body& body, const char* key);
std::string get_text(const Body& body, const char* key);
Bytes get_bytes(const Body& body, const char* key);
Body binary(ByteView bytes);

}  // namespace kiln::smp
