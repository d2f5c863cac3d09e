// Tests for manifests/suit_json: the envelope <-> JSON view over the draft's vectors in both directions, every element
// kind of the schema, the digest and UUID helpers, and malformed JSON refused with its path and the reason.
#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <vector>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "manifests/suit_envelope.hpp"
#include "manifests/suit_json.hpp"
#include "tests/manifests/test_keys.hpp"
#include "tests/support/errors.hpp"

using namespace kiln;
using suit::Json;

namespace {

const char* const envelopes[] = {"example0.signed.suit",         "example0.unsigned.suit", "example1.signed.suit",
                                 "example1.unsigned.suit",       "example2.signed.suit",   "example2.severed.suit",
                                 "example2.severed-signed.suit", "example3.signed.suit",   "example3.unsigned.suit",
                                 "example4.signed.suit",         "example4.unsigned.suit", "example5.signed.suit",
                                 "example5.unsigned.suit"};

Json json_of(const std::string& vector) {
  return suit::envelope_to_json(suit::parse_envelope(test::read_suit_vector(vector)));
}

// Paths (a.b[0].c) of every {"cbor": ...} fallback in `j`: elements the schema did not name.
void collect_unnamed(const Json& j, const std::string& path, std::vector<std::string>& out) {
  if (j.is_object()) {
    if (j.size() == 1 && j.contains("cbor")) out.push_back(path);
    for (auto it = j.begin(); it != j.end(); ++it) collect_unnamed(it.value(), path + "." + it.key(), out);
  } else if (j.is_array()) {
    for (std::size_t i = 0; i < j.size(); ++i) collect_unnamed(j[i], path + "[" + std::to_string(i) + "]", out);
  }
}

// JSON -> envelope -> bytes -> parsed envelope -> JSON: what the CLI's `manifest encode` then `manifest show` do.
Json through_cbor(const Json& j) {
  Bytes encoded = suit::encode_envelope(suit::envelope_from_json(j));
  return suit::envelope_to_json(suit::parse_envelope(encoded));
}

struct Failure {
  ExitCode code = ExitCode::ok;
  std::string message;
};
Failure failure_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& e) {
    return {e.code(), e.what()};
  }
  return {};
}

}  // namespace

TEST_CASE("suit_json: every draft vector round-trips envelope -> JSON -> envelope and JSON -> envelope -> JSON") {
  for (const char* name : envelopes) {
    CAPTURE(name);
    Bytes original = test::read_suit_vector(name);
    Json shown = json_of(name);
    CHECK(suit::encode_envelope(suit::envelope_from_json(shown)) == original);
    CHECK(through_cbor(shown) == shown);
    CHECK(through_cbor(Json::parse(shown.dump())) == shown);
    // The draft's examples use only elements the draft names: nothing falls back to raw CBOR.
    std::vector<std::string> unnamed;
    collect_unnamed(shown, "envelope", unnamed);
    CHECK_MESSAGE(unnamed.empty(), "unnamed elements: ", Json(unnamed).dump());
    CHECK(shown.contains("authentication-wrapper"));
    CHECK(shown["manifest"]["manifest-version"] == 1);
  }
}

TEST_CASE("suit_json: the signed vectors show their COSE_Sign1 with the algorithm by name and a detached payload") {
  for (const char* name : {"example0.signed.suit", "example2.severed-signed.suit", "example5.signed.suit"}) {
    CAPTURE(name);
    Json j = json_of(name);
    const Json& wrapper = j["authentication-wrapper"];
    CHECK(wrapper["digest"]["algorithm-id"] == "sha256");
    CHECK(wrapper["digest"]["digest-bytes"].get<std::string>().size() == 64);
    REQUIRE(wrapper["signatures"].size() == 1);
    const Json& s = wrapper["signatures"][0];
    CHECK(s["protected"]["alg"] == "ES256");
    CHECK(s["payload"].is_null());
    CHECK(s["signature"].get<std::string>().size() == 128);  // r||s, P-256
  }
  Json unsigned_envelope = json_of("example0.unsigned.suit");
  CHECK(unsigned_envelope["authentication-wrapper"]["signatures"] == Json::array());
}

// One manifest holding every element kind the schema knows, written in JSON: encoding it and showing the result gives
// the same JSON back (so each kind converts both ways), and the CBOR is what the draft says each kind is.
TEST_CASE("suit_json: every element kind converts both ways") {
  Json j = json_of("example0.unsigned.suit");
  Json& m = j["manifest"];
  m["reference-uri"] = "https://example.com/manifest.suit";
  m["manifest-component-id"] = Json::array({"6b696c6e", "00"});
  m["common"]["components"] = Json::array({Json::array({"00"}), Json::array({"01", "02"})});
  Json parameters = {
      {"vendor-id", "fa6b4a53-d5ad-5fdf-be9d-e663e4d41ffe"},
      {"class-id", "1492af14-2569-5e48-bf42-9b2d51f2ab45"},
      {"image-digest", {{"algorithm-id", "sha384"}, {"digest-bytes", std::string(96, 'a')}}},
      {"slot", 1},
      {"strict-order", true},
      {"soft-failure", false},
      {"image-size", 4294967296ull},
      {"content", "c0ffee"},
      {"uri", "coaps://example.com/fw.bin"},
      {"source-component", 1},
      {"invoke-args", "2d2d76"},
      {"device-id", "00112233445566778899aabbccddeeff"},  // 16 bytes without dashes: shown dashed
  };
  m["common"]["shared-sequence"] = Json::array({
      {{"directive-set-component-index", 0}},
      {{"directive-override-parameters", parameters}},
      {{"condition-vendor-identifier", 15}},
      {{"condition-class-identifier", 15}},
      {{"condition-device-identifier", 15}},
      {{"directive-set-component-index", true}},
      {{"directive-set-component-index", Json::array({0, 1})}},
  });
  Json inner = Json::array({{{"condition-component-slot", 5}}, {{"condition-abort", 0}}});
  m["validate"] = Json::array({
      {{"condition-image-match", 15}},
      {{"condition-check-content", 15}},
      {{"directive-try-each", Json::array({inner, inner, nullptr})}},
  });
  m["load"] = Json::array({{{"directive-copy", 2}}, {{"directive-swap", 2}}, {{"directive-write", 2}}});
  m["invoke"] = Json::array({{{"directive-invoke", 15}}, {{"directive-run-sequence", inner}}});
  m["payload-fetch"] = Json::array({{{"directive-fetch", 2}}});
  m["install"] = {{"algorithm-id", "sha256"}, {"digest-bytes", std::string(64, '1')}};  // severed: a digest
  m["text"] = {{"en-US",
                {{"manifest-description", "every kind"},
                 {"update-description", "u"},
                 {"manifest-json-source", "{}"},
                 {"manifest-yaml-source", "---"},
                 {"[\"00\"]",
                  {{"vendor-name", "kiln"},
                   {"model-name", "m"},
                   {"vendor-domain", "example.com"},
                   {"model-info", "i"},
                   {"component-description", "d"},
                   {"component-version", "1.0"}}}}}};
  j["install"] = Json::array({{{"directive-fetch", 2}}});  // the severed sequence, carried in the envelope
  j["text"] = {{"de-DE", {{"manifest-description", "jede Art"}}}};

  Json shown = through_cbor(j);
  Json expected = j;
  expected["manifest"]["common"]["shared-sequence"][1]["directive-override-parameters"]["device-id"] =
      "00112233-4455-6677-8899-aabbccddeeff";
  CHECK(shown.dump(1) == expected.dump(1));
  CHECK(through_cbor(shown) == shown);

  // The CBOR each kind becomes.
  suit::Envelope envelope = suit::envelope_from_json(j);
  cbor::Value manifest = suit::manifest(envelope);
  CHECK(manifest.find(suit::manifest_key::reference_uri)->text == "https://example.com/manifest.suit");
  CHECK(manifest.find(suit::manifest_key::install)->is_array());  // a SUIT_Digest, not a bstr-wrapped sequence
  CHECK(manifest.find(suit::manifest_key::load)->is_bytes());     // bstr .cbor SUIT_Command_Sequence
  cbor::Value shared = cbor::unwrap(
      *cbor::unwrap(*manifest.find(suit::manifest_key::common), "common").find(suit::common_key::shared_sequence),
      "shared");
  REQUIRE(shared.items.size() == 14);
  CHECK(shared.items[10].as_int() == std::optional<std::int64_t>(12));
  CHECK(shared.items[11].kind == cbor::Value::Kind::boolean);
  CHECK(shared.items[13].is_array());
  const cbor::Value& p = shared.items[3];
  REQUIRE(p.is_map());
  CHECK(p.find(1)->bytes == from_hex("fa6b4a53d5ad5fdfbe9de663e4d41ffe"));
  CHECK(p.find(3)->is_bytes());  // image-digest: bstr .cbor SUIT_Digest
  CHECK(p.find(14)->number == 4294967296ull);
  CHECK(p.find(12)->kind == cbor::Value::Kind::boolean);
  CHECK(p.find(18)->bytes == from_hex("c0ffee"));
  CHECK(p.find(21)->text == "coaps://example.com/fw.bin");
}

TEST_CASE("suit_json: elements the draft does not name keep their CBOR, under their number") {
  Json j = json_of("example0.unsigned.suit");
  j["manifest"]["99"] = {{"cbor", "a10102"}};                                        // {1: 2}
  j["manifest"]["common"]["shared-sequence"].push_back({{"77", {{"cbor", "f6"}}}});  // command 77, nil
  j["manifest"]["common"]["shared-sequence"][0]["directive-override-parameters"]["-5"] = {{"cbor", "20"}};
  j["cbor:6161"] = {{"cbor", "01"}};  // a text key ("a") in the envelope
  Json shown = through_cbor(j);
  CHECK(shown == j);
  suit::Envelope envelope = suit::envelope_from_json(j);
  bool text_key = false;
  for (const auto& entry : envelope.members.entries)
    text_key = text_key || entry.first == cbor::Value::text_string("a");
  CHECK(text_key);
}

TEST_CASE("suit_json: digests name their algorithms, keep unknown ones by number and refuse unknown names") {
  for (const auto& named : std::vector<std::pair<std::int64_t, std::string>>{{-16, "sha256"},
                                                                             {-17, "sha512-256"},
                                                                             {-18, "shake128"},
                                                                             {-43, "sha384"},
                                                                             {-44, "sha512"},
                                                                             {-45, "shake256"}}) {
    suit::Digest d{named.first, Bytes{1, 2, 3}};
    Json j = suit::digest_to_json(d);
    CHECK(j["algorithm-id"] == named.second);
    CHECK(j["digest-bytes"] == "010203");
    CHECK(suit::digest_from_json(j, "d") == d);
  }
  suit::Digest odd{-99, Bytes{0xff}};
  Json j = suit::digest_to_json(odd);
  CHECK(j["algorithm-id"] == -99);
  CHECK(suit::digest_from_json(j, "d") == odd);

  Failure f = failure_of([] { suit::digest_from_json(Json{{"algorithm-id", "md5"}, {"digest-bytes", "00"}}, "x.y"); });
  CHECK(f.code == ExitCode::failure);
  CHECK(f.message == "manifest JSON at x.y.algorithm-id: unknown digest algorithm");
  f = failure_of([] { suit::digest_from_json(Json{{"algorithm-id", "sha256"}}, "x.y"); });
  CHECK(f.message.starts_with("manifest JSON at x.y: a digest is"));
  f = failure_of([] { suit::digest_from_json(Json{{"algorithm-id", "sha256"}, {"digest-bytes", 5}}, "x"); });
  CHECK(f.message.starts_with("manifest JSON at x: a digest is"));
  f = failure_of([] { suit::digest_from_json(Json::array(), "x"); });
  CHECK(f.code == ExitCode::failure);
}

TEST_CASE("suit_json: UUIDs print 8-4-4-4-12 and parse with or without dashes, nothing else") {
  Bytes id = from_hex("fa6b4a53d5ad5fdfbe9de663e4d41ffe");
  CHECK(suit::uuid_string(id) == "fa6b4a53-d5ad-5fdf-be9d-e663e4d41ffe");
  CHECK(suit::uuid_string(Bytes{1, 2}) == "0102");  // not 16 bytes: plain hex
  CHECK(suit::parse_uuid("fa6b4a53-d5ad-5fdf-be9d-e663e4d41ffe") == id);
  CHECK(suit::parse_uuid("fa6b4a53d5ad5fdfbe9de663e4d41ffe") == id);
  CHECK(suit::parse_uuid("FA6B4A53-D5AD-5FDF-BE9D-E663E4D41FFE") == id);
  for (const char* bad : {"fa6b4a53-d5ad-5fdf-be9d-e663e4d41ff", "fa6b4a53d5ad-5fdf-be9d-e663e4d41ffe0",
                          "fa6b4a5-3d5ad-5fdf-be9d-e663e4d41ffe", "", "not a uuid"}) {
    CAPTURE(bad);
    CHECK(test::exit_code_of([&] { suit::parse_uuid(bad); }) == ExitCode::usage);
  }
  CHECK(failure_of([] { suit::parse_uuid("xyz"); }).message.find("\"xyz\" is not a UUID") != std::string::npos);
}

// Each malformed element: the error is Error(failure), and the message starts with the JSON path of the element.
TEST_CASE("suit_json: malformed JSON is refused with the path of the element and the reason") {
  struct Bad {
    const char* what;
    std::function<void(Json&)> change;
    const char* message;  // the start of the message
  };
  const std::vector<Bad> bad = {
      {"root not an object", [](Json& j) { j = Json::array(); }, "manifest JSON at envelope: expected an object"},
      {"unknown envelope element", [](Json& j) { j["manifest-typo"] = {{"cbor", "01"}}; },
       "manifest JSON at envelope.manifest-typo: unknown element \"manifest-typo\""},
      {"numeric key without CBOR", [](Json& j) { j["manifest"]["99"] = 5; },
       "manifest JSON at envelope.manifest.99: expected {\"cbor\": \"<hex>\"}"},
      {"version as text", [](Json& j) { j["manifest"]["manifest-version"] = "1"; },
       "manifest JSON at envelope.manifest.manifest-version: expected an unsigned integer"},
      {"negative sequence number", [](Json& j) { j["manifest"]["manifest-sequence-number"] = -1; },
       "manifest JSON at envelope.manifest.manifest-sequence-number: expected an unsigned integer"},
      {"fractional sequence number", [](Json& j) { j["manifest"]["manifest-sequence-number"] = 1.5; },
       "manifest JSON at envelope.manifest.manifest-sequence-number: expected an unsigned integer"},
      {"manifest not an object", [](Json& j) { j["manifest"] = "x"; },
       "manifest JSON at envelope.manifest: expected an object"},
      {"components not an array", [](Json& j) { j["manifest"]["common"]["components"] = "00"; },
       "manifest JSON at envelope.manifest.common.components: expected an array of component identifiers"},
      {"empty component identifier",
       [](Json& j) { j["manifest"]["common"]["components"] = Json::array({Json::array()}); },
       "manifest JSON at envelope.manifest.common.components: a component identifier is a non-empty array"},
      {"component part not a string",
       [](Json& j) { j["manifest"]["common"]["components"] = Json::array({Json::array({0})}); },
       "manifest JSON at envelope.manifest.common.components: component identifier parts are hex strings"},
      {"sequence not an array", [](Json& j) { j["manifest"]["validate"] = "x"; },
       "manifest JSON at envelope.manifest.validate: a command sequence must be an array"},
      {"command with two members",
       [](Json& j) {
         j["manifest"]["validate"] = Json::array({{{"directive-copy", 1}, {"directive-swap", 1}}});
       },
       "manifest JSON at envelope.manifest.validate[0]: each command is an object with one member"},
      {"unknown command",
       [](Json& j) {
         j["manifest"]["validate"] = Json::array({{{"directive-frobnicate", 1}}});
       },
       "manifest JSON at envelope.manifest.validate[0]: unknown element \"directive-frobnicate\""},
      {"boolean parameter as text",
       [](Json& j) {
         j["manifest"]["common"]["shared-sequence"][0]["directive-override-parameters"]["strict-order"] = "yes";
       },
       "manifest JSON at envelope.manifest.common.shared-sequence[0].directive-override-parameters.strict-order: "
       "expected true or false"},
      {"uri as number",
       [](Json& j) { j["manifest"]["common"]["shared-sequence"][0]["directive-override-parameters"]["uri"] = 1; },
       "manifest JSON at envelope.manifest.common.shared-sequence[0].directive-override-parameters.uri: expected a "
       "string"},
      {"image digest without bytes",
       [](Json& j) {
         j["manifest"]["common"]["shared-sequence"][0]["directive-override-parameters"]["image-digest"] = {
             {"algorithm-id", "sha256"}};
       },
       "manifest JSON at envelope.manifest.common.shared-sequence[0].directive-override-parameters.image-digest: "
       "a digest is"},
      {"index false",
       [](Json& j) {
         j["manifest"]["common"]["shared-sequence"][0] = {{"directive-set-component-index", false}};
       },
       "manifest JSON at envelope.manifest.common.shared-sequence[0].directive-set-component-index: expected an "
       "unsigned"},
      {"try-each not an array",
       [](Json& j) {
         j["manifest"]["validate"] = Json::array({{{"directive-try-each", 1}}});
       },
       "manifest JSON at envelope.manifest.validate[0].directive-try-each: try-each takes an array"},
      {"text language not an object",
       [](Json& j) {
         j["manifest"]["text"] = {{"en-US", "x"}};
       },
       "manifest JSON at envelope.manifest.text.en-US: expected an object"},
      {"text component key not JSON",
       [](Json& j) {
         j["manifest"]["text"] = {{"en-US", {{"[00", {}}}}};
       },
       "manifest JSON at envelope.manifest.text.en-US.[00: component keys are JSON arrays"},
      {"wrapper without digest", [](Json& j) { j["authentication-wrapper"] = Json::object(); },
       "manifest JSON at envelope.authentication-wrapper: expected {\"digest\""},
      {"signatures not an array", [](Json& j) { j["authentication-wrapper"]["signatures"] = 1; },
       "manifest JSON at envelope.authentication-wrapper.signatures: expected an array"},
      {"signature without its bytes", [](Json& j) { j["authentication-wrapper"]["signatures"][0] = Json::object(); },
       "manifest JSON at envelope.authentication-wrapper.signatures[0]: expected a COSE_Sign1 object"},
      {"signature bytes a number", [](Json& j) { j["authentication-wrapper"]["signatures"][0]["signature"] = 42; },
       "manifest JSON at envelope.authentication-wrapper.signatures[0].signature: expected a hex string"},
      // Hex and UUID text that does not parse: still the path of the element.
      {"bad hex in a digest", [](Json& j) { j["authentication-wrapper"]["digest"]["digest-bytes"] = "zz"; },
       "manifest JSON at envelope.authentication-wrapper.digest.digest-bytes: 'z' is not a hex digit"},
      {"odd hex in content",
       [](Json& j) {
         j["manifest"]["common"]["shared-sequence"][0]["directive-override-parameters"]["content"] = "abc";
       },
       "manifest JSON at envelope.manifest.common.shared-sequence[0].directive-override-parameters.content: hex string "
       "has "
       "an odd number of digits"},
      {"bad hex in a component identifier",
       [](Json& j) { j["manifest"]["common"]["components"] = Json::array({Json::array({"0g"})}); },
       "manifest JSON at envelope.manifest.common.components: "},
      {"bad raw CBOR hex",
       [](Json& j) {
         j["manifest"]["99"] = {{"cbor", "xy"}};
       },
       "manifest JSON at envelope.manifest.99: "},
      {"malformed UUID",
       [](Json& j) {
         j["manifest"]["common"]["shared-sequence"][0]["directive-override-parameters"]["vendor-id"] = "fa6b4a53-d5ad";
       },
       "manifest JSON at envelope.manifest.common.shared-sequence[0].directive-override-parameters.vendor-id: "
       "\"fa6b4a53-d5ad\" is not a UUID"},
  };
  for (const Bad& b : bad) {
    CAPTURE(b.what);
    Json j = json_of("example0.signed.suit");
    b.change(j);
    Failure f = failure_of([&] { suit::envelope_from_json(j); });
    CHECK(f.code == ExitCode::failure);
    CHECK_MESSAGE(f.message.starts_with(b.message), f.message);
  }
}

// What envelope_from_json accepts, parse_envelope accepts when it is encoded: `manifest encode` never writes an
// envelope that `manifest show` (or a device) then refuses.
TEST_CASE("suit_json: an element the draft's CDDL refuses is refused in JSON too, not encoded") {
  struct Bad {
    const char* what;
    std::function<void(Json&)> change;
  };
  Json inner = Json::array({{{"condition-abort", 0}}});
  const std::vector<Bad> bad = {
      {"empty component index array",
       [](Json& j) {
         j["manifest"]["common"]["shared-sequence"][0] = {{"directive-set-component-index", Json::array()}};
       }},
      {"try-each with nil before the end",
       [&](Json& j) {
         j["manifest"]["validate"] = Json::array({{{"directive-try-each", Json::array({inner, nullptr, inner})}}});
       }},
  };
  for (const Bad& b : bad) {
    CAPTURE(b.what);
    Json j = json_of("example0.unsigned.suit");
    b.change(j);
    Failure f = failure_of([&] { suit::envelope_from_json(j); });
    CHECK(f.code == ExitCode::failure);
    CHECK_MESSAGE(f.message.starts_with("manifest JSON at envelope.manifest."), f.message);
  }
}
