// Schema-driven CBOR <-> JSON conversion of SUIT envelopes: one table of draft names per map kind.
#include "manifests/suit_json.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <span>

#include "core/error.hpp"

namespace kiln::suit {
namespace {

using cbor::Value;

// How an element is shown: the shape tells both directions how to convert it.
enum class Shape {
  unsigned_int,
  text,
  bytes,
  uuid,
  boolean,
  generic,             // {"cbor": "<hex>"}
  digest,              // SUIT_Digest array
  wrapped_digest,      // bstr .cbor SUIT_Digest
  authentication,      // bstr .cbor SUIT_Authentication
  manifest,            // bstr .cbor SUIT_Manifest
  common,              // bstr .cbor SUIT_Common
  components,          // [+ SUIT_Component_Identifier]
  component_id,        // [+ bstr]
  sequence,            // bstr .cbor SUIT_Command_Sequence
  severable_sequence,  // sequence or its digest
  text_map,            // bstr .cbor SUIT_Text_Map
  severable_text,      // text map or its digest
  parameters,          // SUIT_Parameters map
  index,               // set-component-index argument: uint, true or [+ uint]
  try_each,            // [2* bstr .cbor SUIT_Command_Sequence, ?nil]
};

struct Field {
  std::int64_t key;
  const char* name;
  Shape shape;
};

constexpr Field envelope_fields[] = {
    {2, "authentication-wrapper", Shape::authentication},
    {3, "manifest", Shape::manifest},
    {16, "payload-fetch", Shape::sequence},
    {20, "install", Shape::sequence},
    {23, "text", Shape::text_map},
};

constexpr Field manifest_fields[] = {
    {1, "manifest-version", Shape::unsigned_int},
    {2, "manifest-sequence-number", Shape::unsigned_int},
    {3, "common", Shape::common},
    {4, "reference-uri", Shape::text},
    {5, "manifest-component-id", Shape::component_id},
    {7, "validate", Shape::sequence},
    {8, "load", Shape::sequence},
    {9, "invoke", Shape::sequence},
    {16, "payload-fetch", Shape::severable_sequence},
    {20, "install", Shape::severable_sequence},
    {23, "text", Shape::severable_text},
};

constexpr Field common_fields[] = {
    {2, "components", Shape::components},
    {4, "shared-sequence", Shape::sequence},
};

constexpr Field parameter_fields[] = {
    {1, "vendor-id", Shape::uuid},
    {2, "class-id", Shape::uuid},
    {3, "image-digest", Shape::wrapped_digest},
    {5, "slot", Shape::unsigned_int},
    {12, "strict-order", Shape::boolean},
    {13, "soft-failure", Shape::boolean},
    {14, "image-size", Shape::unsigned_int},
    {18, "content", Shape::bytes},
    {21, "uri", Shape::text},
    {22, "source-component", Shape::unsigned_int},
    {23, "invoke-args", Shape::bytes},
    {24, "device-id", Shape::uuid},
};

constexpr Field command_fields[] = {
    {1, "condition-vendor-identifier", Shape::unsigned_int},
    {2, "condition-class-identifier", Shape::unsigned_int},
    {3, "condition-image-match", Shape::unsigned_int},
    {5, "condition-component-slot", Shape::unsigned_int},
    {6, "condition-check-content", Shape::unsigned_int},
    {12, "directive-set-component-index", Shape::index},
    {14, "condition-abort", Shape::unsigned_int},
    {15, "directive-try-each", Shape::try_each},
    {18, "directive-write", Shape::unsigned_int},
    {20, "directive-override-parameters", Shape::parameters},
    {21, "directive-fetch", Shape::unsigned_int},
    {22, "directive-copy", Shape::unsigned_int},
    {23, "directive-invoke", Shape::unsigned_int},
    {24, "condition-device-identifier", Shape::unsigned_int},
    {31, "directive-swap", Shape::unsigned_int},
    {32, "directive-run-sequence", Shape::sequence},
};

constexpr Field manifest_text_fields[] = {
    {1, "manifest-description", Shape::text},
    {2, "update-description", Shape::text},
    {3, "manifest-json-source", Shape::text},
    {4, "manifest-yaml-source", Shape::text},
};

constexpr Field component_text_fields[] = {
    {1, "vendor-name", Shape::text},           {2, "model-name", Shape::text},
    {3, "vendor-domain", Shape::text},         {4, "model-info", Shape::text},
    {5, "component-description", Shape::text}, {6, "component-version", Shape::text},
};

constexpr Field cose_header_fields[] = {
    {1, "alg", Shape::generic},  // converted specially (algorithm names)
    {4, "kid", Shape::bytes},
};

struct DigestName {
  std::int64_t id;
  const char* name;
};
constexpr DigestName digest_names[] = {
    {-16, "sha256"}, {-17, "sha512-256"}, {-18, "shake128"}, {-43, "sha384"}, {-44, "sha512"}, {-45, "shake256"},
};

const Field* field_by_key(std::span<const Field> fields, std::int64_t key) {
  for (const auto& f : fields)
    if (f.key == key) return &f;
  return nullptr;
}
const Field* field_by_name(std::span<const Field> fields, const std::string& name) {
  for (const auto& f : fields)
    if (name == f.name) return &f;
  return nullptr;
}

Error json_error(const std::string& path, const std::string& reason) {
  return Error(ExitCode::failure, fmt::format("manifest JSON at {}: {}", path, reason),
               "use the shape `kiln manifest show -o json` prints (docs/manifests.md)");
}

using cbor::unwrap;
using cbor::wrap;

// Hex text of a JSON element (and UUIDs): a malformed one is named by its JSON path, as every other element is.
Bytes hex_from_json(const std::string& text, const std::string& path) {
  try {
    return from_hex(text);
  } catch (const Error& e) {
    throw json_error(path, e.what());
  }
}
Bytes hex_from_json(const Json& j, const std::string& path) {
  if (!j.is_string()) throw json_error(path, "expected a hex string");
  return hex_from_json(j.get<std::string>(), path);
}

// Sequences nest through try-each and run-sequence, each level bstr-wrapped, so the CBOR decoder's depth
// limit starts afresh at every level: without this cap a long chain of wrappers would exhaust the stack.
constexpr int max_sequence_nesting = 16;

class SequenceNesting {
 public:
  SequenceNesting() { ++depth_; }
  ~SequenceNesting() { --depth_; }
  SequenceNesting(const SequenceNesting&) = delete;
  SequenceNesting& operator=(const SequenceNesting&) = delete;
  bool too_deep() const { return depth_ > max_sequence_nesting; }

 private:
  static thread_local int depth_;
};
thread_local int SequenceNesting::depth_ = 0;

const std::string too_deep_reason = fmt::format("command sequences nested deeper than {} levels", max_sequence_nesting);

// ---- CBOR -> JSON --------------------------------------------------------------------------------

Json to_json(const Value& v, Shape shape, const std::string& what);

Json generic_to_json(const Value& v) {
  return Json{{"cbor", to_hex(cbor::encode(v))}};
}

std::string key_to_json(const Value& key) {
  if (auto k = key.as_int()) return std::to_string(*k);
  return "cbor:" + to_hex(cbor::encode(key));
}

Json map_to_json(const Value& v, std::span<const Field> fields, const std::string& what) {
  if (!v.is_map()) cbor::fail(v, what, "expected a map");
  Json out = Json::object();
  for (const auto& [k, val] : v.entries) {
    auto key = k.as_int();
    const Field* field = key ? field_by_key(fields, *key) : nullptr;
    if (field)
      out[field->name] = to_json(val, field->shape, what + "." + field->name);
    else
      out[key_to_json(k)] = generic_to_json(val);
  }
  return out;
}

Json digest_json(const Value& v, const std::string& what) {
  return digest_to_json(parse_digest(v, what));
}

Json sequence_to_json(const Value& v, const std::string& what) {
  SequenceNesting nesting;
  if (nesting.too_deep()) cbor::fail(v, what, too_deep_reason);
  if (!v.is_array()) cbor::fail(v, what, "a command sequence must be an array");
  if (v.items.size() % 2 != 0) cbor::fail(v, what, "a command sequence must hold (command, argument) pairs");
  Json out = Json::array();
  for (std::size_t i = 0; i < v.items.size(); i += 2) {
    auto id = v.items[i].as_int();
    if (!id) cbor::fail(v.items[i], what, "a command id must be an integer");
    const Field* field = field_by_key(command_fields, *id);
    std::string item_what = fmt::format("{}[{}]", what, i / 2);
    if (field)
      out.push_back(Json{{field->name, to_json(v.items[i + 1], field->shape, item_what + "." + field->name)}});
    else
      out.push_back(Json{{std::to_string(*id), generic_to_json(v.items[i + 1])}});
  }
  return out;
}

Json component_id_to_json(const Value& v, const std::string& what) {
  if (!v.is_array() || v.items.empty()) cbor::fail(v, what, "a component identifier must be a non-empty array");
  Json out = Json::array();
  for (const auto& part : v.items) {
    if (!part.is_bytes()) cbor::fail(part, what, "component identifier parts must be byte strings");
    out.push_back(to_hex(part.bytes));
  }
  return out;
}

Json text_map_to_json(const Value& v, const std::string& what) {
  if (!v.is_map()) cbor::fail(v, what, "expected a map of language tags");
  Json out = Json::object();
  for (const auto& [lang, lmap] : v.entries) {
    if (!lang.is_text()) cbor::fail(lang, what, "text map keys must be language tags (text strings)");
    if (!lmap.is_map()) cbor::fail(lmap, what, "expected a map of text for each language");
    Json texts = Json::object();
    for (const auto& [k, val] : lmap.entries) {
      if (k.is_array()) {
        texts[component_id_to_json(k, what).dump()] = map_to_json(val, component_text_fields, what + "." + lang.text);
        continue;
      }
      auto key = k.as_int();
      const Field* field = key ? field_by_key(manifest_text_fields, *key) : nullptr;
      texts[field ? field->name : key_to_json(k)] =
          field ? to_json(val, field->shape, what + "." + field->name) : generic_to_json(val);
    }
    out[lang.text] = texts;
  }
  return out;
}

Json cose_header_to_json(const Value& v, const std::string& what) {
  Json out = map_to_json(v, cose_header_fields, what);
  if (const Value* alg = v.find(cose::header_alg); alg && alg->as_int()) {
    auto name = cose::algorithm_name(*alg->as_int());
    out["alg"] = cose::algorithm_from_name(name) ? Json(name) : Json(*alg->as_int());
  }
  return out;
}

Json authentication_to_json(const Value& v, const std::string& what) {
  if (!v.is_array() || v.items.empty())
    cbor::fail(v, what, "the authentication wrapper must be an array starting with the manifest digest");
  Json out = Json::object();
  out["digest"] = digest_json(unwrap(v.items[0], what + ".digest"), what + ".digest");
  Json signatures = Json::array();
  for (std::size_t i = 1; i < v.items.size(); ++i) {
    std::string block_what = fmt::format("{}.signatures[{}]", what, i - 1);
    Value block = unwrap(v.items[i], block_what);
    if (!block.is_tag() || block.number != cose::sign1_tag) {
      signatures.push_back(generic_to_json(block));
      continue;
    }
    cose::Sign1 sign1 = cose::parse_sign1(block, block_what);
    Json s = Json::object();
    s["protected"] = sign1.protected_header.empty()
                         ? Json(nullptr)
                         : cose_header_to_json(cbor::decode(sign1.protected_header, block_what + ".protected"),
                                               block_what + ".protected");
    s["unprotected"] = cose_header_to_json(sign1.unprotected, block_what + ".unprotected");
    s["payload"] = sign1.payload ? Json(to_hex(*sign1.payload)) : Json(nullptr);
    s["signature"] = to_hex(sign1.signature);
    signatures.push_back(s);
  }
  out["signatures"] = signatures;
  return out;
}

Json to_json(const Value& v, Shape shape, const std::string& what) {
  switch (shape) {
    case Shape::unsigned_int:
      if (!v.is_uint()) cbor::fail(v, what, "expected an unsigned integer");
      return v.number;
    case Shape::text:
      if (!v.is_text()) cbor::fail(v, what, "expected a text string");
      return v.text;
    case Shape::bytes:
      if (!v.is_bytes()) cbor::fail(v, what, "expected a byte string");
      return to_hex(v.bytes);
    case Shape::uuid:
      if (!v.is_bytes()) cbor::fail(v, what, "expected a byte string (UUID)");
      return v.bytes.size() == 16 ? uuid_string(v.bytes) : to_hex(v.bytes);
    case Shape::boolean:
      if (v.kind != Value::Kind::boolean) cbor::fail(v, what, "expected true or false");
      return v.number != 0;
    case Shape::generic:
      return generic_to_json(v);
    case Shape::digest:
      return digest_json(v, what);
    case Shape::wrapped_digest:
      return digest_json(unwrap(v, what), what);
    case Shape::authentication:
      return authentication_to_json(unwrap(v, what), what);
    case Shape::manifest:
      return map_to_json(unwrap(v, what), manifest_fields, what);
    case Shape::common:
      return map_to_json(unwrap(v, what), common_fields, what);
    case Shape::components: {
      if (!v.is_array()) cbor::fail(v, what, "components must be an array of component identifiers");
      Json out = Json::array();
      for (const auto& id : v.items) out.push_back(component_id_to_json(id, what));
      return out;
    }
    case Shape::component_id:
      return component_id_to_json(v, what);
    case Shape::sequence:
      return sequence_to_json(unwrap(v, what), what);
    case Shape::severable_sequence:
      return v.is_array() ? digest_json(v, what) : sequence_to_json(unwrap(v, what), what);
    case Shape::text_map:
      return text_map_to_json(unwrap(v, what), what);
    case Shape::severable_text:
      return v.is_array() ? digest_json(v, what) : text_map_to_json(unwrap(v, what), what);
    case Shape::parameters:
      return map_to_json(v, parameter_fields, what);
    case Shape::index:
      if (v.is_uint()) return v.number;
      if (v.kind == Value::Kind::boolean && v.number == 1) return true;
      if (v.is_array() && !v.items.empty() &&
          std::all_of(v.items.begin(), v.items.end(), [](const Value& i) { return i.is_uint(); })) {
        Json out = Json::array();
        for (const auto& i : v.items) out.push_back(i.number);
        return out;
      }
      cbor::fail(v, what, "component index must be an unsigned integer, true, or an array of them");
    case Shape::try_each: {
      if (!v.is_array()) cbor::fail(v, what, "try-each takes an array of command sequences");
      Json out = Json::array();
      for (std::size_t i = 0; i < v.items.size(); ++i) {
        if (v.items[i].kind == Value::Kind::null && i + 1 == v.items.size())
          out.push_back(nullptr);
        else
          out.push_back(
              sequence_to_json(unwrap(v.items[i], fmt::format("{}[{}]", what, i)), fmt::format("{}[{}]", what, i)));
      }
      return out;
    }
  }
  cbor::fail(v, what, "unhandled element");
}

// ---- JSON -> CBOR --------------------------------------------------------------------------------

Value from_json(const Json& j, Shape shape, const std::string& path);

bool is_generic(const Json& j) {
  return j.is_object() && j.size() == 1 && j.contains("cbor") && j["cbor"].is_string();
}

Value generic_from_json(const Json& j, const std::string& path) {
  if (!is_generic(j)) throw json_error(path, "expected {\"cbor\": \"<hex>\"}");
  return cbor::decode(hex_from_json(j["cbor"], path), path);
}

Value key_from_json(const std::string& name, const std::string& path) {
  if (name.rfind("cbor:", 0) == 0) return cbor::decode(hex_from_json(name.substr(5), path), path);
  try {
    std::size_t used = 0;
    long long k = std::stoll(name, &used);
    if (used == name.size()) return Value::integer(k);
  } catch (const std::exception&) {
  }
  throw json_error(path, fmt::format("unknown element \"{}\"", name));
}

Value map_from_json(const Json& j, std::span<const Field> fields, const std::string& path) {
  if (!j.is_object()) throw json_error(path, "expected an object");
  Value out = Value::map();
  for (const auto& [name, val] : j.items()) {
    std::string child = path + "." + name;
    if (const Field* field = field_by_name(fields, name))
      out.entries.emplace_back(Value::integer(field->key), from_json(val, field->shape, child));
    else
      out.entries.emplace_back(key_from_json(name, child), generic_from_json(val, child));
  }
  return out;
}

Value digest_from(const Json& j, const std::string& path) {
  return digest_value(digest_from_json(j, path));
}

Value sequence_from_json(const Json& j, const std::string& path) {
  SequenceNesting nesting;
  if (nesting.too_deep()) throw json_error(path, too_deep_reason);
  if (!j.is_array()) throw json_error(path, "a command sequence must be an array of {\"<command>\": argument}");
  Value out = Value::array();
  for (std::size_t i = 0; i < j.size(); ++i) {
    std::string child = fmt::format("{}[{}]", path, i);
    if (!j[i].is_object() || j[i].size() != 1) throw json_error(child, "each command is an object with one member");
    auto command = j[i].begin();  // (items() would hand out a proxy that dies with the statement)
    const std::string& name = command.key();
    const Json& arg = command.value();
    if (const Field* field = field_by_name(command_fields, name)) {
      out.items.push_back(Value::integer(field->key));
      out.items.push_back(from_json(arg, field->shape, child + "." + name));
    } else {
      out.items.push_back(key_from_json(name, child));
      out.items.push_back(generic_from_json(arg, child));
    }
  }
  return out;
}

Value component_id_from_json(const Json& j, const std::string& path) {
  if (!j.is_array() || j.empty()) throw json_error(path, "a component identifier is a non-empty array of hex strings");
  Value out = Value::array();
  for (const auto& part : j) {
    if (!part.is_string()) throw json_error(path, "component identifier parts are hex strings");
    out.items.push_back(Value::byte_string(hex_from_json(part, path)));
  }
  return out;
}

Value text_map_from_json(const Json& j, const std::string& path) {
  if (!j.is_object()) throw json_error(path, "expected an object of language tags");
  Value out = Value::map();
  for (const auto& [lang, texts] : j.items()) {
    if (!texts.is_object()) throw json_error(path + "." + lang, "expected an object");
    Value lmap = Value::map();
    for (const auto& [name, val] : texts.items()) {
      std::string child = path + "." + lang + "." + name;
      if (!name.empty() && name.front() == '[') {
        Json id = Json::parse(name, nullptr, false);
        if (id.is_discarded()) throw json_error(child, "component keys are JSON arrays of hex strings");
        lmap.entries.emplace_back(component_id_from_json(id, child), map_from_json(val, component_text_fields, child));
      } else if (const Field* field = field_by_name(manifest_text_fields, name)) {
        lmap.entries.emplace_back(Value::integer(field->key), from_json(val, field->shape, child));
      } else {
        lmap.entries.emplace_back(key_from_json(name, child), generic_from_json(val, child));
      }
    }
    out.entries.emplace_back(Value::text_string(lang), std::move(lmap));
  }
  return out;
}

Value cose_header_from_json(const Json& j, const std::string& path) {
  if (!j.is_object()) throw json_error(path, "expected an object");
  Value alg;
  if (j.contains("alg")) {
    const Json& a = j["alg"];
    if (a.is_string() && cose::algorithm_from_name(a.get<std::string>()))
      alg = Value::integer(*cose::algorithm_from_name(a.get<std::string>()));
    else if (a.is_number_integer())
      alg = Value::integer(a.get<std::int64_t>());
    else
      alg = generic_from_json(a, path + ".alg");
  }
  Value out = Value::map();
  for (const auto& [name, val] : j.items()) {
    if (name == "alg")
      out.entries.emplace_back(Value::integer(cose::header_alg), alg);
    else if (name == "kid")
      out.entries.emplace_back(Value::integer(cose::header_kid), from_json(val, Shape::bytes, path + ".kid"));
    else
      out.entries.emplace_back(key_from_json(name, path + "." + name), generic_from_json(val, path + "." + name));
  }
  return out;
}

Value authentication_from_json(const Json& j, const std::string& path) {
  if (!j.is_object() || !j.contains("digest"))
    throw json_error(path, "expected {\"digest\": ..., \"signatures\": [...]}");
  Value out = Value::array({wrap(digest_from(j["digest"], path + ".digest"))});
  if (!j.contains("signatures")) return out;
  const Json& signatures = j["signatures"];
  if (!signatures.is_array()) throw json_error(path + ".signatures", "expected an array");
  for (std::size_t i = 0; i < signatures.size(); ++i) {
    const Json& s = signatures[i];
    std::string child = fmt::format("{}.signatures[{}]", path, i);
    if (is_generic(s)) {
      out.items.push_back(wrap(generic_from_json(s, child)));
      continue;
    }
    if (!s.is_object() || !s.contains("signature")) throw json_error(child, "expected a COSE_Sign1 object");
    cose::Sign1 sign1;
    const Json& prot = s.value("protected", Json(nullptr));
    if (!prot.is_null()) sign1.protected_header = cbor::encode(cose_header_from_json(prot, child + ".protected"));
    sign1.unprotected = cose_header_from_json(s.value("unprotected", Json::object()), child + ".unprotected");
    const Json& payload = s.value("payload", Json(nullptr));
    if (!payload.is_null()) sign1.payload = hex_from_json(payload, child + ".payload");
    sign1.signature = hex_from_json(s["signature"], child + ".signature");
    out.items.push_back(wrap(cose::to_value(sign1)));
  }
  return out;
}

Value from_json(const Json& j, Shape shape, const std::string& path) {
  switch (shape) {
    case Shape::unsigned_int:
      if (!j.is_number_unsigned() && !(j.is_number_integer() && j.get<std::int64_t>() >= 0))
        throw json_error(path, "expected an unsigned integer");
      return Value::uint(j.get<std::uint64_t>());
    case Shape::text:
      if (!j.is_string()) throw json_error(path, "expected a string");
      return Value::text_string(j.get<std::string>());
    case Shape::bytes:
      return Value::byte_string(hex_from_json(j, path));
    case Shape::uuid: {
      if (!j.is_string()) throw json_error(path, "expected a UUID or hex string");
      // The dashes decide, not the length: 18 bytes are 36 hex digits too, which must read back as hex.
      auto s = j.get<std::string>();
      if (s.find('-') == std::string::npos) return Value::byte_string(hex_from_json(s, path));
      try {
        return Value::byte_string(parse_uuid(s));
      } catch (const Error& e) {
        throw json_error(path, e.what());
      }
    }
    case Shape::boolean:
      if (!j.is_boolean()) throw json_error(path, "expected true or false");
      return Value::boolean_value(j.get<bool>());
    case Shape::generic:
      return generic_from_json(j, path);
    case Shape::digest:
      return digest_from(j, path);
    case Shape::wrapped_digest:
      return wrap(digest_from(j, path));
    case Shape::authentication:
      return wrap(authentication_from_json(j, path));
    case Shape::manifest:
      return wrap(map_from_json(j, manifest_fields, path));
    case Shape::common:
      return wrap(map_from_json(j, common_fields, path));
    case Shape::components: {
      if (!j.is_array()) throw json_error(path, "expected an array of component identifiers");
      Value out = Value::array();
      for (const auto& id : j) out.items.push_back(component_id_from_json(id, path));
      return out;
    }
    case Shape::component_id:
      return component_id_from_json(j, path);
    case Shape::sequence:
      return wrap(sequence_from_json(j, path));
    case Shape::severable_sequence:
      return j.is_object() ? digest_from(j, path) : wrap(sequence_from_json(j, path));
    case Shape::text_map:
      return wrap(text_map_from_json(j, path));
    case Shape::severable_text:
      return j.is_object() && j.contains("algorithm-id") ? digest_from(j, path) : wrap(text_map_from_json(j, path));
    case Shape::parameters:
      return map_from_json(j, parameter_fields, path);
    case Shape::index:
      if (j.is_boolean() && j.get<bool>()) return Value::boolean_value(true);
      if (j.is_array()) {
        // [+ uint]: an empty list selects nothing, and the envelope would not parse again.
        if (j.empty()) throw json_error(path, "a component index list needs at least one index");
        Value out = Value::array();
        for (const auto& i : j) out.items.push_back(from_json(i, Shape::unsigned_int, path));
        return out;
      }
      return from_json(j, Shape::unsigned_int, path);
    case Shape::try_each: {
      if (!j.is_array()) throw json_error(path, "try-each takes an array of command sequences");
      Value out = Value::array();
      for (std::size_t i = 0; i < j.size(); ++i) {
        // [2* bstr .cbor SUIT_Command_Sequence, ?nil]: nil only as the last item.
        if (j[i].is_null() && i + 1 != j.size())
          throw json_error(fmt::format("{}[{}]", path, i), "null may only be the last item of a try-each");
        out.items.push_back(j[i].is_null() ? Value::null_value()
                                           : wrap(sequence_from_json(j[i], fmt::format("{}[{}]", path, i))));
      }
      return out;
    }
  }
  throw json_error(path, "unhandled element");
}

}  // namespace

Json digest_to_json(const Digest& digest) {
  Json out = Json::object();
  auto name = std::find_if(std::begin(digest_names), std::end(digest_names),
                           [&](const DigestName& d) { return d.id == digest.algorithm; });
  if (name != std::end(digest_names))
    out["algorithm-id"] = name->name;
  else
    out["algorithm-id"] = digest.algorithm;
  out["digest-bytes"] = to_hex(digest.bytes);
  return out;
}

Digest digest_from_json(const Json& j, const std::string& path) {
  if (!j.is_object() || !j.contains("algorithm-id") || !j.contains("digest-bytes") || !j["digest-bytes"].is_string())
    throw json_error(path, "a digest is {\"algorithm-id\": \"sha256\", \"digest-bytes\": \"<hex>\"}");
  Digest out;
  const Json& alg = j["algorithm-id"];
  if (alg.is_number_integer()) {
    out.algorithm = alg.get<std::int64_t>();
  } else {
    auto name = std::find_if(std::begin(digest_names), std::end(digest_names),
                             [&](const DigestName& d) { return alg.is_string() && alg.get<std::string>() == d.name; });
    if (name == std::end(digest_names)) throw json_error(path + ".algorithm-id", "unknown digest algorithm");
    out.algorithm = name->id;
  }
  out.bytes = hex_from_json(j["digest-bytes"], path + ".digest-bytes");
  return out;
}

std::string uuid_string(ByteView uuid) {
  std::string hex = to_hex(uuid);
  if (hex.size() != 32) return hex;
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" + hex.substr(16, 4) + "-" +
         hex.substr(20);
}

Bytes parse_uuid(const std::string& text) {
  std::string hex;
  for (char c : text)
    if (c != '-') hex += c;
  bool dashes_ok = text.size() == 32 ||
                   (text.size() == 36 && text[8] == '-' && text[13] == '-' && text[18] == '-' && text[23] == '-');
  if (hex.size() != 32 || !dashes_ok)
    throw Error(ExitCode::usage, fmt::format("\"{}\" is not a UUID", text),
                "write it as 8-4-4-4-12 hex digits, e.g. fa6b4a53-d5ad-5fdf-be9d-e663e4d41ffe");
  return from_hex(hex);
}

Json envelope_to_json(const Envelope& envelope) {
  return map_to_json(envelope.members, envelope_fields, "envelope");
}

Envelope envelope_from_json(const Json& json) {
  Envelope out;
  try {
    out.members = map_from_json(json, envelope_fields, "envelope");
  } catch (const nlohmann::json::exception& e) {  // a value of the wrong JSON type somewhere below
    throw json_error("envelope", e.what());
  }
  return out;
}

}  // namespace kiln::suit
