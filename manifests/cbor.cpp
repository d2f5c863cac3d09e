// Strict CBOR decoding on libcbor's streaming decoder (every item's offset known) and deterministic encoding.
#include "manifests/cbor.hpp"

#include <cbor.h>
#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "core/error.hpp"
#include "core/utf8.hpp"

namespace kiln::cbor {

Value Value::uint(std::uint64_t v) {
  Value out;
  out.kind = Kind::unsigned_int;
  out.number = v;
  return out;
}

Value Value::integer(std::int64_t v) {
  if (v >= 0) return uint(static_cast<std::uint64_t>(v));
  Value out;
  out.kind = Kind::negative_int;
  out.number = static_cast<std::uint64_t>(-(v + 1));
  return out;
}

Value Value::byte_string(Bytes b) {
  Value out;
  out.kind = Kind::bytes;
  out.bytes = std::move(b);
  return out;
}

Value Value::text_string(std::string s) {
  Value out;
  out.kind = Kind::text;
  out.text = std::move(s);
  return out;
}

Value Value::array(std::vector<Value> items) {
  Value out;
  out.kind = Kind::array;
  out.items = std::move(items);
  return out;
}

Value Value::map(std::vector<std::pair<Value, Value>> entries) {
  Value out;
  out.kind = Kind::map;
  out.entries = std::move(entries);
  return out;
}

Value Value::tagged(std::uint64_t tag, Value content) {
  Value out;
  out.kind = Kind::tag;
  out.number = tag;
  out.items.push_back(std::move(content));
  return out;
}

Value Value::boolean_value(bool b) {
  Value out;
  out.kind = Kind::boolean;
  out.number = b ? 1 : 0;
  return out;
}

Value Value::null_value() {
  return Value{};
}

std::optional<std::int64_t> Value::as_int() const {
  constexpr auto max = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (kind == Kind::unsigned_int && number <= max) return static_cast<std::int64_t>(number);
  if (kind == Kind::negative_int && number <= max) return -static_cast<std::int64_t>(number) - 1;
  return std::nullopt;
}

const Value* Value::find(std::int64_t key) const {
  for (const auto& [k, v] : entries)
    if (k.as_int() == key) return &v;
  return nullptr;
}

Value* Value::find(std::int64_t key) {
  return const_cast<Value*>(static_cast<const Value*>(this)->find(key));
}

void Value::set(std::int64_t key, Value value) {
  if (Value* existing = find(key)) {
    *existing = std::move(value);
    return;
  }
  // Deterministic order for small integer keys: unsigned ascending, then negative ascending in magnitude.
  auto rank = [](std::int64_t k) { return k >= 0 ? std::pair{0, k} : std::pair{1, -k}; };
  auto pos = std::find_if(entries.begin(), entries.end(), [&](const auto& entry) {
    auto k = entry.first.as_int();
    return k && rank(*k) > rank(key);
  });
  entries.insert(pos, {Value::integer(key), std::move(value)});
}

void Value::erase(std::int64_t key) {
  std::erase_if(entries, [&](const auto& entry) { return entry.first.as_int() == key; });
}

bool Value::operator==(const Value& other) const {
  return kind == other.kind && number == other.number && bytes == other.bytes && text == other.text &&
         items == other.items && entries == other.entries;
}

void fail(const Value& at, std::string_view what, std::string_view reason) {
  throw Error(ExitCode::failure, fmt::format("{} at offset {}: {}", what, at.offset, reason),
              "the file is not a valid SUIT envelope (draft-ietf-suit-manifest-37); check how it was produced");
}

namespace {

// What one cbor_stream_decode call saw: the head of one item.
struct Event {
  enum class Type { none, uint, negint, bytes, text, array, map, tag, boolean, null, undefined, rejected };
  Type type = Type::none;
  std::uint64_t argument = 0;
  const unsigned char* data = nullptr;
  std::string_view rejection;
};

Event& event_of(void* context) {
  return *static_cast<Event*>(context);
}

void on_uint(void* c, std::uint64_t v) {
  event_of(c) = {Event::Type::uint, v, nullptr, {}};
}
void on_uint8(void* c, std::uint8_t v) {
  on_uint(c, v);
}
void on_uint16(void* c, std::uint16_t v) {
  on_uint(c, v);
}
void on_uint32(void* c, std::uint32_t v) {
  on_uint(c, v);
}
void on_negint(void* c, std::uint64_t v) {
  event_of(c) = {Event::Type::negint, v, nullptr, {}};
}
void on_negint8(void* c, std::uint8_t v) {
  on_negint(c, v);
}
void on_negint16(void* c, std::uint16_t v) {
  on_negint(c, v);
}
void on_negint32(void* c, std::uint32_t v) {
  on_negint(c, v);
}
void on_bytes(void* c, cbor_data data, std::size_t length) {
  event_of(c) = {Event::Type::bytes, length, data, {}};
}
void on_text(void* c, cbor_data data, std::size_t length) {
  event_of(c) = {Event::Type::text, length, data, {}};
}
void on_array(void* c, std::size_t n) {
  event_of(c) = {Event::Type::array, n, nullptr, {}};
}
void on_map(void* c, std::size_t n) {
  event_of(c) = {Event::Type::map, n, nullptr, {}};
}
void on_tag(void* c, std::uint64_t v) {
  event_of(c) = {Event::Type::tag, v, nullptr, {}};
}
void on_bool(void* c, bool b) {
  event_of(c) = {Event::Type::boolean, b ? 1u : 0u, nullptr, {}};
}
void on_null(void* c) {
  event_of(c) = {Event::Type::null, 0, nullptr, {}};
}
void on_undefined(void* c) {
  event_of(c) = {Event::Type::undefined, 0, nullptr, {}};
}
void reject(void* c, std::string_view why) {
  event_of(c) = {Event::Type::rejected, 0, nullptr, why};
}
void on_indefinite(void* c) {
  reject(c, "indefinite-length item (SUIT requires definite lengths)");
}
void on_break(void* c) {
  reject(c, "unexpected break code");
}
void on_float(void* c, float) {
  reject(c, "floating-point value (not used by SUIT)");
}
void on_double(void* c, double) {
  reject(c, "floating-point value (not used by SUIT)");
}

cbor_callbacks make_callbacks() {
  cbor_callbacks cb = cbor_empty_callbacks;
  cb.uint8 = on_uint8;
  cb.uint16 = on_uint16;
  cb.uint32 = on_uint32;
  cb.uint64 = on_uint;
  cb.negint8 = on_negint8;
  cb.negint16 = on_negint16;
  cb.negint32 = on_negint32;
  cb.negint64 = on_negint;
  cb.byte_string = on_bytes;
  cb.string = on_text;
  cb.byte_string_start = on_indefinite;
  cb.string_start = on_indefinite;
  cb.indef_array_start = on_indefinite;
  cb.indef_map_start = on_indefinite;
  cb.array_start = on_array;
  cb.map_start = on_map;
  cb.tag = on_tag;
  cb.float2 = on_float;
  cb.float4 = on_float;
  cb.float8 = on_double;
  cb.boolean = on_bool;
  cb.null = on_null;
  cb.undefined = on_undefined;
  cb.indef_break = on_break;
  return cb;
}

const cbor_callbacks callbacks = make_callbacks();

std::size_t shortest_head_size(std::uint64_t argument) {
  if (argument < 24) return 1;
  if (argument <= 0xff) return 2;
  if (argument <= 0xffff) return 3;
  if (argument <= 0xffffffffu) return 5;
  return 9;
}

class Decoder {
 public:
  Decoder(ByteView input, std::string_view what, std::size_t base, const DecodeOptions& options)
      : input_(input), what_(what), base_(base), options_(options) {}

  Value item(std::size_t depth) {
    const std::size_t start = pos_;
    auto error = [&](const std::string& reason) -> Error {
      return Error(ExitCode::failure, fmt::format("{} at offset {}: {}", what_, base_ + start, reason),
                   "the file is not well-formed deterministic CBOR; check how it was produced");
    };
    if (depth > options_.max_depth) throw error(fmt::format("nesting deeper than {} levels", options_.max_depth));
    if (pos_ >= input_.size()) throw error("truncated: an item was expected but the input ended");

    Event event;
    auto result = cbor_stream_decode(input_.data() + pos_, input_.size() - pos_, &callbacks, &event);
    // libcbor 0.8 reports the one-byte tag heads 0xc6..0xd4 (tags 6..20) as errors; COSE_Sign1 is tag 18
    // (0xd2). The head is the whole item header there: the tag number is the low five bits.
    const std::uint8_t initial = input_[pos_];
    if (result.status == CBOR_DECODER_ERROR && initial >= 0xc6 && initial <= 0xd4) {
      on_tag(&event, initial & 0x1fu);
      result.status = CBOR_DECODER_FINISHED;
      result.read = 1;
    }
    if (result.status == CBOR_DECODER_NEDATA)
      throw error(fmt::format("truncated: the item needs more bytes than the {} remaining", input_.size() - pos_));
    if (result.status != CBOR_DECODER_FINISHED) throw error("malformed item head");
    if (event.type == Event::Type::rejected) throw error(std::string(event.rejection));
    if (event.type == Event::Type::none) throw error("unsupported simple value");

    std::size_t head = result.read;
    if (event.type == Event::Type::bytes || event.type == Event::Type::text) {
      // Never trust the length: the payload must lie inside what is left of the input.
      const std::size_t data_offset = static_cast<std::size_t>(event.data - input_.data());
      if (data_offset < pos_ || data_offset > input_.size() || event.argument > input_.size() - data_offset)
        throw error("string length runs past the end of the input");
      head = data_offset - pos_;
    }
    const bool has_argument =
        event.type != Event::Type::boolean && event.type != Event::Type::null && event.type != Event::Type::undefined;
    if (has_argument && head != shortest_head_size(event.argument))
      throw error("non-deterministic encoding: integer or length not in its shortest form");
    pos_ += head;

    Value value;
    value.offset = base_ + start;
    switch (event.type) {
      case Event::Type::uint:
        value.kind = Value::Kind::unsigned_int;
        value.number = event.argument;
        break;
      case Event::Type::negint:
        value.kind = Value::Kind::negative_int;
        value.number = event.argument;
        break;
      case Event::Type::bytes:
        value.kind = Value::Kind::bytes;
        value.bytes.assign(event.data, event.data + event.argument);
        pos_ += event.argument;
        break;
      case Event::Type::text:
        value.kind = Value::Kind::text;
        value.text.assign(reinterpret_cast<const char*>(event.data), event.argument);
        // RFC 8949 3.1: a text string is UTF-8; anything else is not valid CBOR (and has no JSON form).
        if (!is_utf8(value.text)) throw error("text string is not valid UTF-8");
        pos_ += event.argument;
        break;
      case Event::Type::array:
        value.kind = Value::Kind::array;
        // Each element takes at least one byte: a count beyond the remaining input is a lie.
        if (event.argument > input_.size() - pos_) throw error("array count exceeds the remaining input");
        for (std::uint64_t i = 0; i < event.argument; ++i) value.items.push_back(item(depth + 1));
        break;
      case Event::Type::map:
        value.kind = Value::Kind::map;
        if (event.argument > (input_.size() - pos_) / 2) throw error("map count exceeds the remaining input");
        for (std::uint64_t i = 0; i < event.argument; ++i) {
          Value key = item(depth + 1);
          for (const auto& entry : value.entries)
            if (entry.first == key) throw error(fmt::format("duplicate map key at offset {}", key.offset));
          Value val = item(depth + 1);
          value.entries.emplace_back(std::move(key), std::move(val));
        }
        break;
      case Event::Type::tag:
        value.kind = Value::Kind::tag;
        value.number = event.argument;
        value.items.push_back(item(depth + 1));
        break;
      case Event::Type::boolean:
        value.kind = Value::Kind::boolean;
        value.number = event.argument;
        break;
      case Event::Type::null:
        value.kind = Value::Kind::null;
        break;
      default:
        value.kind = Value::Kind::undefined;
        break;
    }
    return value;
  }

  std::size_t position() const { return pos_; }

 private:
  ByteView input_;
  std::string_view what_;
  std::size_t base_;
  const DecodeOptions& options_;
  std::size_t pos_ = 0;
};

template <typename EncodeFn, typename... Args>
void put(Bytes& out, EncodeFn encode_fn, Args... args) {
  unsigned char buffer[9];
  std::size_t n = encode_fn(args..., buffer, sizeof buffer);
  out.insert(out.end(), buffer, buffer + n);
}

}  // namespace

Value decode(ByteView input, std::string_view what, std::size_t base_offset, const DecodeOptions& options) {
  Decoder decoder(input, what, base_offset, options);
  Value value = decoder.item(0);
  if (decoder.position() != input.size())
    throw Error(ExitCode::failure,
                fmt::format("{} at offset {}: {} trailing bytes after the item", what, base_offset + decoder.position(),
                            input.size() - decoder.position()),
                "the file is not a single CBOR item; it may be truncated, concatenated or padded");
  return value;
}

void encode_into(Bytes& out, const Value& value) {
  switch (value.kind) {
    case Value::Kind::unsigned_int:
      put(out, cbor_encode_uint, value.number);
      break;
    case Value::Kind::negative_int:
      put(out, cbor_encode_negint, value.number);
      break;
    case Value::Kind::bytes:
      put(out, cbor_encode_bytestring_start, value.bytes.size());
      out.insert(out.end(), value.bytes.begin(), value.bytes.end());
      break;
    case Value::Kind::text:
      put(out, cbor_encode_string_start, value.text.size());
      out.insert(out.end(), value.text.begin(), value.text.end());
      break;
    case Value::Kind::array:
      put(out, cbor_encode_array_start, value.items.size());
      for (const auto& item : value.items) encode_into(out, item);
      break;
    case Value::Kind::map:
      put(out, cbor_encode_map_start, value.entries.size());
      for (const auto& [k, v] : value.entries) {
        encode_into(out, k);
        encode_into(out, v);
      }
      break;
    case Value::Kind::tag:
      put(out, cbor_encode_tag, value.number);
      encode_into(out, value.items.at(0));
      break;
    case Value::Kind::boolean:
      put(out, cbor_encode_bool, value.number != 0);
      break;
    case Value::Kind::null:
      put(out, cbor_encode_null);
      break;
    case Value::Kind::undefined:
      put(out, cbor_encode_undef);
      break;
  }
}

Bytes encode(const Value& value) {
  Bytes out;
  encode_into(out, value);
  return out;
}

Value wrap(const Value& inner) {
  return Value::byte_string(encode(inner));
}

Value unwrap(const Value& bstr, std::string_view what) {
  if (!bstr.is_bytes()) fail(bstr, what, "expected a byte string wrapping CBOR");
  return decode(bstr.bytes, what, bstr.offset + byte_string_header(bstr.bytes.size()).size());
}

Bytes byte_string_header(std::uint64_t length) {
  Bytes out;
  put(out, cbor_encode_bytestring_start, static_cast<std::size_t>(length));
  return out;
}

}  // namespace kiln::cbor
