// SMP v2 packet codec: header packing and CBOR bodies through libcbor (streaming decoder, item encoder).
#include "transport/smp.hpp"

#include <cbor.h>
#include <fmt/format.h>

#include <cstdlib>
#include <limits>
#include <memory>
#include <vector>

#include "core/error.hpp"

namespace kiln::smp {
namespace {

[[noreturn]] void malformed(const std::string& reason) {
  throw Error(ExitCode::board, "malformed SMP packet: " + reason,
              "the board or link sent damaged data; retry, and check the cable or the firmware's SMP server");
}

// ---- encoding: Body -> libcbor items -> bytes ----

struct CborItemFree {
  void operator()(cbor_item_t* item) const { cbor_decref(&item); }
};
using CborItem = std::unique_ptr<cbor_item_t, CborItemFree>;

cbor_item_t* build_unsigned(std::uint64_t v) {
  if (v <= 0xFF) return cbor_build_uint8(static_cast<std::uint8_t>(v));
  if (v <= 0xFFFF) return cbor_build_uint16(static_cast<std::uint16_t>(v));
  if (v <= 0xFFFFFFFF) return cbor_build_uint32(static_cast<std::uint32_t>(v));
  return cbor_build_uint64(v);
}

cbor_item_t* build_negative(std::int64_t v) {  // v < 0; CBOR stores -1 - v
  auto magnitude = static_cast<std::uint64_t>(-(v + 1));
  cbor_item_t* item;
  if (magnitude <= 0xFF) item = cbor_build_negint8(static_cast<std::uint8_t>(magnitude));
  else if (magnitude <= 0xFFFF) item = cbor_build_negint16(static_cast<std::uint16_t>(magnitude));
  else if (magnitude <= 0xFFFFFFFF) item = cbor_build_negint32(static_cast<std::uint32_t>(magnitude));
  else item = cbor_build_negint64(magnitude);
  return item;
}

cbor_item_t* to_cbor(const Body& value) {
  switch (value.type()) {
    case Body::value_t::null: return cbor_new_null();
    case Body::value_t::boolean: return cbor_build_bool(value.get<bool>());
    case Body::value_t::number_unsigned: return build_unsigned(value.get<std::uint64_t>());
    case Body::value_t::number_integer: {
      auto v = value.get<std::int64_t>();
      return v >= 0 ? build_unsigned(static_cast<std::uint64_t>(v)) : build_negative(v);
    }
    case Body::value_t::number_float: return cbor_build_float8(value.get<double>());
    case Body::value_t::string: {
      const auto& s = value.get_ref<const std::string&>();
      return cbor_build_stringn(s.data(), s.size());
    }
    case Body::value_t::binary: {
      const auto& b = value.get_binary();
      return cbor_build_bytestring(b.data(), b.size());
    }
    case Body::value_t::array: {
      CborItem array(cbor_new_definite_array(value.size()));
      for (const auto& element : value) {
        CborItem child(to_cbor(element));
        if (!array || !child || !cbor_array_push(array.get(), child.get())) throw std::bad_alloc();
      }
      return array.release();
    }
    case Body::value_t::object: {
      CborItem map(cbor_new_definite_map(value.size()));
      for (const auto& [key, element] : value.items()) {
        CborItem k(cbor_build_stringn(key.data(), key.size()));
        CborItem v(to_cbor(element));
        if (!map || !k || !v || !cbor_map_add(map.get(), cbor_pair{k.get(), v.get()})) throw std::bad_alloc();
      }
      return map.release();
    }
    case Body::value_t::discarded: break;
  }
  throw Error(ExitCode::failure, "cannot encode this value as CBOR");
}

// ---- decoding: libcbor streaming callbacks build the Body with an explicit stack ----

struct Container {
  Body value;
  bool is_map = false;
  bool indefinite = false;
  std::size_t remaining = 0;  // items (maps: keys and values) still expected when definite
  std::optional<std::string> key;
};

struct Builder {
  std::vector<Container> stack;
  std::optional<Body> root;
  std::string error;
  std::size_t bytes_left = 0;  // bytes after the item being decoded: bounds declared sizes

  void fail(std::string reason) {
    if (error.empty()) error = std::move(reason);
  }

  void add(Body value) {
    if (!error.empty()) return;
    while (true) {
      if (stack.empty()) {
        if (root) return fail("more than one top-level item");
        root = std::move(value);
        return;
      }
      Container& top = stack.back();
      if (top.is_map && !top.key) {
        if (!value.is_string()) return fail("map key is not a text string");
        top.key = value.get<std::string>();
      } else if (top.is_map) {
        top.value[*top.key] = std::move(value);
        top.key.reset();
      } else {
        top.value.push_back(std::move(value));
      }
      if (top.indefinite || --top.remaining > 0) return;
      value = std::move(top.value);
      stack.pop_back();
    }
  }

  void open(bool is_map, bool indefinite, std::size_t count) {
    if (!error.empty()) return;
    if (stack.size() >= static_cast<std::size_t>(max_body_depth)) return fail("nesting too deep");
    std::size_t items = is_map ? count * 2 : count;
    if (!indefinite && (count > bytes_left || items > bytes_left))
      return fail(fmt::format("container declares {} items but only {} bytes follow", count, bytes_left));
    Body empty = is_map ? Body::object() : Body::array();
    if (!indefinite && count == 0) return add(std::move(empty));
    stack.push_back(Container{std::move(empty), is_map, indefinite, items, std::nullopt});
  }

  void close_indefinite() {
    if (!error.empty()) return;
    if (stack.empty() || !stack.back().indefinite) return fail("unexpected break");
    if (stack.back().key) return fail("map ends after a key without a value");
    Body value = std::move(stack.back().value);
    stack.pop_back();
    add(std::move(value));
  }
};

Builder& builder(void* context) { return *static_cast<Builder*>(context); }

template <typename T>
void on_unsigned(void* context, T v) {
  builder(context).add(Body(static_cast<std::uint64_t>(v)));
}
template <typename T>
void on_negative(void* context, T v) {
  auto magnitude = static_cast<std::uint64_t>(v);
  if (magnitude > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
    return builder(context).fail("negative integer out of range");
  builder(context).add(Body(-1 - static_cast<std::int64_t>(magnitude)));
}

cbor_callbacks make_callbacks() {
  cbor_callbacks cb = cbor_empty_callbacks;
  cb.uint8 = on_unsigned<std::uint8_t>;
  cb.uint16 = on_unsigned<std::uint16_t>;
  cb.uint32 = on_unsigned<std::uint32_t>;
  cb.uint64 = on_unsigned<std::uint64_t>;
  cb.negint8 = on_negative<std::uint8_t>;
  cb.negint16 = on_negative<std::uint16_t>;
  cb.negint32 = on_negative<std::uint32_t>;
  cb.negint64 = on_negative<std::uint64_t>;
  cb.byte_string = [](void* c, cbor_data data, std::size_t length) {
    builder(c).add(Body::binary(std::vector<std::uint8_t>(data, data + length)));
  };
  cb.string = [](void* c, cbor_data data, std::size_t length) {
    builder(c).add(Body(std::string(reinterpret_cast<const char*>(data), length)));
  };
  cb.byte_string_start = [](void* c) { builder(c).fail("indefinite-length byte string"); };
  cb.string_start = [](void* c) { builder(c).fail("indefinite-length text string"); };
  cb.array_start = [](void* c, std::size_t n) { builder(c).open(false, false, n); };
  cb.indef_array_start = [](void* c) { builder(c).open(false, true, 0); };
  cb.map_start = [](void* c, std::size_t n) { builder(c).open(true, false, n); };
  cb.indef_map_start = [](void* c) { builder(c).open(true, true, 0); };
  cb.indef_break = [](void* c) { builder(c).close_indefinite(); };
  cb.tag = [](void*, std::uint64_t) {};  // tags carry no meaning in SMP: the tagged item stands
  cb.float2 = [](void* c, float v) { builder(c).add(Body(static_cast<double>(v))); };
  cb.float4 = [](void* c, float v) { builder(c).add(Body(static_cast<double>(v))); };
  cb.float8 = [](void* c, double v) { builder(c).add(Body(v)); };
  cb.null = [](void* c) { builder(c).add(Body(nullptr)); };
  cb.undefined = [](void* c) { builder(c).add(Body(nullptr)); };
  cb.boolean = [](void* c, bool v) { builder(c).add(Body(v)); };
  return cb;
}

const cbor_callbacks decode_callbacks = make_callbacks();

}  // namespace

bool is_response(Op op) { return op == Op::read_response || op == Op::write_response; }

Op response_op(Op request) { return request == Op::write ? Op::write_response : Op::read_response; }

Bytes encode_header(const Header& h) {
  return {static_cast<std::uint8_t>(((h.version & 0x3) << 3) | (static_cast<std::uint8_t>(h.op) & 0x7)),
          h.flags,
          static_cast<std::uint8_t>(h.length >> 8),
          static_cast<std::uint8_t>(h.length),
          static_cast<std::uint8_t>(h.group >> 8),
          static_cast<std::uint8_t>(h.group),
          h.sequence,
          h.command};
}

Header decode_header(ByteView bytes) {
  if (bytes.size() < header_size) malformed(fmt::format("header needs 8 bytes, got {}", bytes.size()));
  Header h;
  std::uint8_t op = bytes[0] & 0x7;
  if (op > 3) malformed(fmt::format("unknown operation {}", op));
  if (bytes[0] & 0xE0) malformed("reserved header bits are set");
  h.op = static_cast<Op>(op);
  h.version = (bytes[0] >> 3) & 0x3;
  h.flags = bytes[1];
  h.length = static_cast<std::uint16_t>((bytes[2] << 8) | bytes[3]);
  h.group = static_cast<std::uint16_t>((bytes[4] << 8) | bytes[5]);
  h.sequence = bytes[6];
  h.command = bytes[7];
  return h;
}

Bytes encode_body(const Body& body) {
  CborItem item(to_cbor(body));
  unsigned char* buffer = nullptr;
  std::size_t capacity = 0;
  std::size_t length = cbor_serialize_alloc(item.get(), &buffer, &capacity);
  std::unique_ptr<unsigned char, decltype(&std::free)> owned(buffer, &std::free);
  if (length == 0) throw std::bad_alloc();
  return Bytes(buffer, buffer + length);
}

Body decode_body(ByteView bytes) {
  if (bytes.empty()) return Body::object();  // an empty body is an empty map
  Builder b;
  std::size_t offset = 0;
  while (offset < bytes.size()) {
    if (b.root) malformed(fmt::format("{} trailing bytes after the CBOR body", bytes.size() - offset));
    b.bytes_left = bytes.size() - offset;
    auto result = cbor_stream_decode(bytes.data() + offset, bytes.size() - offset, &decode_callbacks, &b);
    if (result.status == CBOR_DECODER_NEDATA) malformed(fmt::format("CBOR body truncated at offset {}", offset));
    if (result.status != CBOR_DECODER_FINISHED || result.read == 0)
      malformed(fmt::format("invalid CBOR at offset {}", offset));
    offset += result.read;
    b.bytes_left = bytes.size() - offset;
    if (!b.error.empty()) malformed(fmt::format("{} (offset {})", b.error, offset));
  }
  if (!b.root) malformed("CBOR body ends inside a container");
  if (!b.root->is_object()) malformed("CBOR body is not a map");
  return std::move(*b.root);
}

Bytes encode_frame(Header header, const Body& body) {
  Bytes encoded = encode_body(body);
  if (encoded.size() > max_body_size) throw Error(ExitCode::failure, "SMP body larger than 65535 bytes");
  header.length = static_cast<std::uint16_t>(encoded.size());
  Bytes frame = encode_header(header);
  frame.insert(frame.end(), encoded.begin(), encoded.end());
  return frame;
}

Frame decode_frame(ByteView bytes) {
  Frame frame;
  frame.header = decode_header(bytes);
  std::size_t body_size = bytes.size() - header_size;
  if (frame.header.length != body_size)
    malformed(fmt::format("header says {} body bytes, packet has {}", frame.header.length, body_size));
  frame.body = decode_body(bytes.subspan(header_size));
  return frame;
}

std::optional<std::size_t> frame_size(ByteView buffered) {
  if (buffered.size() < header_size) return std::nullopt;
  decode_header(buffered);  // reject garbage early instead of waiting for a bogus length
  return header_size + ((static_cast<std::size_t>(buffered[2]) << 8) | buffered[3]);
}

Outcome response_outcome(const Body& body) {
  Outcome outcome;
  if (auto err = body.find("err"); err != body.end()) {
    if (!err->is_object()) malformed("\"err\" must be a map {group, rc}");
    auto g = err->find("group");
    auto r = err->find("rc");
    if (g != err->end() && g->is_number_unsigned() && r != err->end() && r->is_number_integer()) {
      outcome.group = static_cast<std::uint16_t>(g->get<std::uint64_t>());
      outcome.rc = r->get<int>();
      return outcome;
    }
    malformed("\"err\" must be a map {group, rc}");
  }
  if (auto r = body.find("rc"); r != body.end()) {
    if (!r->is_number_integer()) malformed("\"rc\" is not an integer");
    outcome.rc = r->get<int>();
  }
  return outcome;
}

Body error_body(int code) { return Body{{"rc", code}}; }

Body group_error_body(std::uint16_t g, int group_rc) { return Body{{"err", Body{{"group", g}, {"rc", group_rc}}}}; }

std::string rc_name(int code) {
  static const char* const names[] = {"ok",        "unknown error",     "out of memory", "invalid value",
                                      "timeout",   "no such entry",     "bad state",     "message too big",
                                      "not supported", "corrupt",       "busy",          "access denied"};
  if (code >= 0 && code < static_cast<int>(std::size(names))) return fmt::format("{} ({})", names[code], code);
  return fmt::format("error {}", code);
}

std::uint64_t get_uint(const Body& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || !it->is_number_unsigned()) malformed(fmt::format("\"{}\" missing or not an unsigned integer", key));
  return it->get<std::uint64_t>();
}

std::string get_text(const Body& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || !it->is_string()) malformed(fmt::format("\"{}\" missing or not a text string", key));
  return it->get<std::string>();
}

Bytes get_bytes(const Body& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || !it->is_binary()) malformed(fmt::format("\"{}\" missing or not a byte string", key));
  const auto& b = it->get_binary();
  return Bytes(b.begin(), b.end());
}

Body binary(ByteView bytes) { return Body::binary(std::vector<std::uint8_t>(bytes.begin(), bytes.end())); }

}  // namespace kiln::smp
