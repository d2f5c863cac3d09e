// CBOR data items as plain values: a strict decoder (offsets, reasons, depth limit) and a deterministic encoder.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/bytes.hpp"

namespace kiln::cbor {

// One CBOR data item. Maps keep their entries in encoded order so that decode -> encode is the identity.
struct Value {
  enum class Kind { unsigned_int, negative_int, bytes, text, array, map, tag, boolean, null, undefined };
  Kind kind = Kind::null;
  // unsigned_int: the value; negative_int: n for the value -1-n; tag: the tag number; boolean: 0/1.
  std::uint64_t number = 0;
  Bytes bytes;                                   // bytes
  std::string text;                              // text
  std::vector<Value> items;                      // array elements; tag: exactly one (the content)
  std::vector<std::pair<Value, Value>> entries;  // map
  std::size_t offset = 0;                        // where the item starts in the decoded input

  static Value uint(std::uint64_t v);
  static Value integer(std::int64_t v);
  static Value byte_string(Bytes b);
  static Value text_string(std::string s);
  static Value array(std::vector<Value> items = {});
  static Value map(std::vector<std::pair<Value, Value>> entries = {});
  static Value tagged(std::uint64_t tag, Value content);
  static Value boolean_value(bool b);
  static Value null_value();

  bool is_uint() const { return kind == Kind::unsigned_int; }
  bool is_int() const { return kind == Kind::unsigned_int || kind == Kind::negative_int; }
  bool is_bytes() const { return kind == Kind::bytes; }
  bool is_text() const { return kind == Kind::text; }
  bool is_array() const { return kind == Kind::array; }
  bool is_map() const { return kind == Kind::map; }
  bool is_tag() const { return kind == Kind::tag; }
  // The integer value if it fits in int64 (unsigned or negative), else nullopt.
  std::optional<std::int64_t> as_int() const;
  // Map lookup by integer key; nullptr when absent.
  const Value* find(std::int64_t key) const;
  Value* find(std::int64_t key);
  // Adds or replaces an integer-keyed entry, keeping keys in ascending deterministic order for new keys.
  void set(std::int64_t key, Value value);
  void erase(std::int64_t key);

  bool operator==(const Value& other) const;
};

struct DecodeOptions {
  std::size_t max_depth = 32;  // arrays, maps and tags nested deeper than this are refused
};

// Decodes exactly one data item spanning all of `input`. Throws Error(failure) with the byte offset
// (relative to `base_offset`, so nested bstr-wrapped items report offsets in the outer file) and the
// reason for: malformed or truncated input, trailing bytes, indefinite lengths, non-shortest
// integer/length forms (the deterministic encoding SUIT requires), floats, excessive nesting.
Value decode(ByteView input, std::string_view what, std::size_t base_offset = 0, const DecodeOptions& options = {});

// Deterministic encoding: shortest integer and length forms, definite lengths, map entries in the
// order they are held.
Bytes encode(const Value& value);
void encode_into(Bytes& out, const Value& value);

// Bstr-wrapped CBOR (`bstr .cbor T`), as SUIT nests its elements.
Value wrap(const Value& inner);
// Decodes the item inside a byte string, reporting offsets in the outer input. Throws Error(failure) if
// `bstr` is not a byte string or its content is not exactly one well-formed item.
Value unwrap(const Value& bstr, std::string_view what);

// The CBOR header of a byte string of `length` bytes (for hashing bstr-wrapped content without copying).
Bytes byte_string_header(std::uint64_t length);

// Throws Error(failure) "<what> at offset N: <reason>" for a structural mismatch.
[[noreturn]] void fail(const Value& at, std::string_view what, std::string_view reason);

}  // namespace kiln::cbor
