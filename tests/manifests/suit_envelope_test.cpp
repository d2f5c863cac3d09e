// Tests for manifests/suit_envelope and suit_json: the draft's envelopes decode, name and re-encode byte for byte.
#include <doctest/doctest.h>

#include <set>
#include <sstream>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "manifests/suit_envelope.hpp"
#include "manifests/suit_json.hpp"
#include "signing/key_ref.hpp"
#include "tests/manifests/test_keys.hpp"

using namespace kiln;

namespace {

const char* const vectors[] = {"example0.signed.suit",         "example0.unsigned.suit", "example1.signed.suit",
                               "example1.unsigned.suit",       "example2.signed.suit",   "example2.severed.suit",
                               "example2.severed-signed.suit", "example3.signed.suit",   "example3.unsigned.suit",
                               "example4.signed.suit",         "example4.unsigned.suit", "example5.signed.suit",
                               "example5.unsigned.suit"};

std::string parse_error(const Bytes& input) {
  try {
    suit::parse_envelope(input);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("suit: every draft envelope decodes and re-encodes byte for byte, directly and through JSON") {
  for (const char* name : vectors) {
    CAPTURE(name);
    Bytes original = test::read_suit_vector(name);
    suit::Envelope envelope = suit::parse_envelope(original);
    CHECK(suit::encode_envelope(envelope) == original);
    suit::Json json = suit::envelope_to_json(envelope);
    // Through text, as `manifest show -o json` and `manifest encode` do.
    suit::Json reread = suit::Json::parse(json.dump(2));
    CHECK(suit::encode_envelope(suit::envelope_from_json(reread)) == original);
  }
}

TEST_CASE("suit: the JSON view names elements as the draft does") {
  suit::Json json = suit::envelope_to_json(suit::parse_envelope(test::read_suit_vector("example4.signed.suit")));
  const auto& m = json["manifest"];
  CHECK(m["manifest-sequence-number"] == 4);
  CHECK(m["common"]["components"].dump() == R"([["00"],["02"],["01"]])");
  const auto& shared = m["common"]["shared-sequence"];
  CHECK(shared[0]["directive-set-component-index"] == 0);
  CHECK(shared[1]["directive-override-parameters"]["vendor-id"] == "fa6b4a53-d5ad-5fdf-be9d-e663e4d41ffe");
  CHECK(shared[1]["directive-override-parameters"]["image-digest"]["algorithm-id"] == "sha256");
  CHECK(shared[2]["condition-vendor-identifier"] == 15);
  CHECK(m["load"][1]["directive-override-parameters"]["source-component"] == 0);
  CHECK(m["load"][2]["directive-copy"] == 2);
  CHECK(m["payload-fetch"][1]["directive-override-parameters"]["uri"] == "http://example.com/file.bin");
  CHECK(json["authentication-wrapper"]["signatures"][0]["protected"]["alg"] == "ES256");

  suit::Json ex3 = suit::envelope_to_json(suit::parse_envelope(test::read_suit_vector("example3.signed.suit")));
  const auto& try_each = ex3["manifest"]["install"][0]["directive-try-each"];
  REQUIRE(try_each.size() == 2);
  CHECK(try_each[1][0]["directive-override-parameters"]["slot"] == 1);
  CHECK(try_each[1][1]["condition-component-slot"] == 5);

  suit::Json ex2 = suit::envelope_to_json(suit::parse_envelope(test::read_suit_vector("example2.signed.suit")));
  CHECK(ex2["manifest"]["install"]["algorithm-id"] == "sha256");  // severable: a digest in the manifest
  CHECK(ex2["install"][1]["directive-fetch"] == 2);               // and the sequence in the envelope
  CHECK(ex2["text"]["en-US"]["[\"00\"]"]["vendor-domain"] == "arm.com");
}

TEST_CASE("suit: the manifest digest covers the bstr-wrapped manifest") {
  suit::Envelope envelope = suit::parse_envelope(test::read_suit_vector("example2.signed.suit"));
  suit::AuthenticationWrapper wrapper = suit::authentication(envelope);
  CHECK(to_hex(wrapper.digest.bytes) == "6a5197ed8f9dccf733d1c89a359441708e070b4c6dcb9a1c2c82c6165f609b90");
  CHECK(suit::compute_wrapped_digest(suit::digest_sha256, suit::manifest_bytes(envelope)) == wrapper.digest);
  CHECK_FALSE(suit::compute_digest(suit::digest_sha256, suit::manifest_bytes(envelope)) == wrapper.digest);
}

TEST_CASE("suit: severing example 2 gives the draft's severed envelope") {
  suit::Envelope envelope = suit::parse_envelope(test::read_suit_vector("example2.signed.suit"));
  CHECK(suit::sever(envelope) == std::vector<std::string>{"install", "text"});
  CHECK(suit::encode_envelope(envelope) == test::read_suit_vector("example2.severed-signed.suit"));
  CHECK(suit::sever(envelope).empty());
}

TEST_CASE("suit: adding a signature to the unsigned severed example gives the draft's signed one") {
  test::TempDir dir;
  suit::Envelope envelope = suit::parse_envelope(test::read_suit_vector("example2.severed.suit"));
  auto signer = open_signer(test::suit_vector("draft_private_key.pem"));
  cose::Sign1 sign1 = suit::add_signature(envelope, *signer);
  Bytes expected = test::read_suit_vector("example2.severed-signed.suit");
  Bytes ours = suit::encode_envelope(envelope);
  REQUIRE(ours.size() == expected.size());
  // Everything but the ECDSA signature (random k) is identical.
  auto at = std::search(ours.begin(), ours.end(), sign1.signature.begin(), sign1.signature.end());
  REQUIRE(at != ours.end());
  std::copy(expected.begin() + (at - ours.begin()), expected.begin() + (at - ours.begin()) + 64, at);
  CHECK(ours == expected);

  // Several signers: a second signature is appended, the first kept.
  auto ed = test::make_signer(dir, KeyType::ed25519, "ed.pem");
  suit::add_signature(envelope, *ed);
  CHECK(suit::authentication(envelope).authentication_blocks.size() == 2);
}

TEST_CASE("suit: malformed envelopes are refused with offset and reason") {
  Bytes good = test::read_suit_vector("example0.signed.suit");
  CHECK(parse_error(Bytes(good.begin(), good.end() - 1)).find("truncated") != std::string::npos);
  Bytes trailing = good;
  trailing.push_back(0);
  CHECK(parse_error(trailing).find("at offset 237: 1 trailing bytes") != std::string::npos);
  Bytes untagged(good.begin() + 2, good.end());
  CHECK(parse_error(untagged).find("tag 107") != std::string::npos);
  // manifest-version (offset 125 holds "01 01": key 1, value 1) set to 2.
  Bytes version = good;
  REQUIRE(version[125] == 0x01);
  REQUIRE(version[126] == 0x01);
  version[126] = 0x02;
  CHECK(parse_error(version).find("at offset 126: manifest-version must be 1") != std::string::npos);
  // A command sequence with an odd number of items (validate: 82 03 0f -> 81 03 ...).
  Bytes odd = good;
  REQUIRE(odd[0xe5] == 0x82);
  odd[0xe5] = 0x81;
  CHECK_FALSE(parse_error(odd).empty());
  // Every prefix of every vector fails cleanly (never crashes, never reads past the end).
  for (const char* name : vectors) {
    Bytes input = test::read_suit_vector(name);
    for (std::size_t n = 0; n < input.size(); ++n)
      CHECK_THROWS_AS(suit::parse_envelope(ByteView(input).first(n)), Error);
  }
}

TEST_CASE("suit: JSON that does not describe an envelope is refused with its path") {
  suit::Json json = suit::envelope_to_json(suit::parse_envelope(test::read_suit_vector("example0.signed.suit")));
  json["manifest"]["common"]["shared-sequence"][0]["directive-override-parameters"]["image-size"] = "big";
  CHECK_THROWS_WITH_AS(
      suit::envelope_from_json(json),
      doctest::Contains("shared-sequence[0].directive-override-parameters.image-size: expected an unsigned integer"),
      Error);
  suit::Json bad_digest = suit::envelope_to_json(suit::parse_envelope(test::read_suit_vector("example0.signed.suit")));
  bad_digest["authentication-wrapper"]["digest"]["algorithm-id"] = "md5";
  CHECK_THROWS_WITH_AS(suit::envelope_from_json(bad_digest), doctest::Contains("unknown digest algorithm"), Error);
}

// Found by fuzz/suit_envelope_fuzz: an 18-byte vendor-id is 36 hex digits in JSON, the length of a dashed UUID,
// and was read back as a UUID (and refused); the dashes decide now. The input is kept in the target's corpus
// (fuzz/corpus/suit_envelope/vendor-id-18-bytes).
TEST_CASE("suit: identifiers of any length round-trip through JSON, byte for byte") {
  suit::Json json = suit::envelope_to_json(suit::parse_envelope(test::read_suit_vector("example4.unsigned.suit")));
  auto& parameters = json["manifest"]["common"]["shared-sequence"][1]["directive-override-parameters"];
  REQUIRE(parameters["vendor-id"] == "fa6b4a53-d5ad-5fdf-be9d-e663e4d41ffe");
  for (std::size_t size : {0u, 1u, 15u, 16u, 17u, 18u, 32u}) {
    CAPTURE(size);
    Bytes id(size, 0);
    for (std::size_t i = 0; i < size; ++i) id[i] = static_cast<std::uint8_t>(0xa0 + i);
    parameters["vendor-id"] = to_hex(id);
    parameters["class-id"] = to_hex(id);
    Bytes encoded = suit::encode_envelope(suit::envelope_from_json(json));
    // Envelope -> JSON -> envelope is an identity, and so is JSON -> envelope -> JSON.
    suit::Json shown = suit::envelope_to_json(suit::parse_envelope(encoded));
    CHECK(suit::encode_envelope(suit::envelope_from_json(suit::Json::parse(shown.dump()))) == encoded);
    CHECK(suit::envelope_to_json(suit::envelope_from_json(shown)) == shown);
    auto& shown_id = shown["manifest"]["common"]["shared-sequence"][1]["directive-override-parameters"]["vendor-id"];
    if (size == 16) {
      CHECK(shown_id == "a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeaf");  // a UUID is shown dashed
    } else {
      CHECK(shown_id == to_hex(id));
    }
  }
  parameters["vendor-id"] = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1";  // 18 bytes, 36 digits: hex, not a UUID
  CHECK_NOTHROW(suit::envelope_from_json(json));
  parameters["vendor-id"] = "a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeafb0";  // dashed, but not 8-4-4-4-12
  CHECK_THROWS_WITH_AS(suit::envelope_from_json(json), doctest::Contains("is not a UUID"), Error);
}

TEST_CASE("suit: unknown elements survive the JSON round trip as raw CBOR") {
  suit::Envelope envelope = suit::parse_envelope(test::read_suit_vector("example0.unsigned.suit"));
  envelope.members.set(99, cbor::Value::text_string("private"));
  suit::Json json = suit::envelope_to_json(envelope);
  CHECK(json["99"]["cbor"] ==
        "677072697661746"
        "5");
  CHECK(suit::encode_envelope(suit::envelope_from_json(json)) == suit::encode_envelope(envelope));
}

TEST_CASE("suit: command sequences nested through try-each are capped, in CBOR and in JSON") {
  auto nested_validate = [](int levels) {
    cbor::Value sequence = cbor::Value::array({cbor::Value::uint(3), cbor::Value::uint(15)});
    for (int i = 0; i < levels; ++i)
      sequence = cbor::Value::array({cbor::Value::uint(15), cbor::Value::array({cbor::wrap(sequence)})});
    suit::Envelope envelope = suit::parse_envelope(test::read_suit_vector("example0.unsigned.suit"));
    cbor::Value m = suit::manifest(envelope);
    m.set(suit::manifest_key::validate, cbor::wrap(sequence));
    suit::set_manifest(envelope, m);
    return suit::encode_envelope(envelope);
  };
  CHECK_NOTHROW(suit::parse_envelope(nested_validate(10)));
  CHECK(parse_error(nested_validate(40)).find("nested deeper than 16 levels") != std::string::npos);

  suit::Json json = suit::envelope_to_json(suit::parse_envelope(nested_validate(15)));
  suit::Json* validate = &json["manifest"]["validate"];
  for (int i = 0; i < 15; ++i) validate = &(*validate)[0]["directive-try-each"][0];
  *validate = suit::Json::array({{{"directive-try-each", suit::Json::array({*validate})}}});
  *validate = suit::Json::array({{{"directive-try-each", suit::Json::array({*validate})}}});
  CHECK_THROWS_WITH_AS(suit::envelope_from_json(json), doctest::Contains("nested deeper than 16 levels"), Error);
}

TEST_CASE("suit: a JSON value of the wrong type anywhere is a kiln error, not a crash") {
  suit::Json json = suit::envelope_to_json(suit::parse_envelope(test::read_suit_vector("example0.signed.suit")));
  json["authentication-wrapper"]["signatures"][0]["signature"] = 42;
  CHECK_THROWS_WITH_AS(suit::envelope_from_json(json), doctest::Contains("manifest JSON at envelope"), Error);
}

// The draft's text for each example (exampleN.txt) prints its envelopes in hex: each hex block is one of the
// example's binary vectors, byte for byte, and the signed envelope is among them; the JSON source is the
// manifest kiln builds from it (its sequence number and first component's digest are in the envelope).
TEST_CASE("suit: each example's draft text shows exactly its binary envelopes, and its JSON matches them") {
  struct Example {
    const char* text;
    const char* json;
    std::vector<const char*> binaries;
  };
  const std::vector<Example> examples = {
      {"example0.txt", "example0.json", {"example0.unsigned.suit", "example0.signed.suit"}},
      {"example1.txt", "example1.json", {"example1.unsigned.suit", "example1.signed.suit"}},
      {"example2.txt", "example2.json",
       {"example2.severed.suit", "example2.severed-signed.suit", "example2.signed.suit"}},
      {"example3.txt", "example3.json", {"example3.unsigned.suit", "example3.signed.suit"}},
      {"example4.txt", "example4.json", {"example4.unsigned.suit", "example4.signed.suit"}},
      {"example5.txt", "example5.json", {"example5.unsigned.suit", "example5.signed.suit"}},
  };
  for (const auto& example : examples) {
    CAPTURE(example.text);
    std::set<Bytes> binaries;
    for (const char* name : example.binaries) binaries.insert(test::read_suit_vector(name));
    std::istringstream lines(read_text_file(test::suit_vector(example.text)));
    // Fenced blocks (~~~ ... ~~~) that are nothing but hex digits are envelope dumps; the others are CBOR-diag.
    std::vector<Bytes> blocks;
    std::vector<std::string> block;
    bool in_block = false;
    for (std::string line; std::getline(lines, line);) {
      if (!line.starts_with("~~~")) {
        if (in_block) block.push_back(line);
        continue;
      }
      if (in_block) {
        std::string hex;
        bool all_hex = !block.empty();
        for (const auto& l : block) {
          all_hex = all_hex && !l.empty() && l.find_first_not_of("0123456789abcdef") == std::string::npos;
          hex += l;
        }
        if (all_hex) blocks.push_back(from_hex(hex));
      }
      in_block = !in_block;
      block.clear();
    }
    REQUIRE(blocks.size() >= 1);
    bool signed_shown = false;
    for (const auto& dump : blocks) {
      CHECK_MESSAGE(binaries.count(dump) == 1, "a hex block of ", example.text, " is none of its binary vectors");
      signed_shown = signed_shown || dump == test::read_suit_vector(example.binaries.back());
    }
    CHECK(signed_shown);
    auto json = suit::Json::parse(read_text_file(test::suit_vector(example.json)));
    auto shown = suit::envelope_to_json(suit::parse_envelope(test::read_suit_vector(example.binaries.back())));
    CHECK(shown.dump().find("\"manifest-sequence-number\":" + json["manifest-sequence-number"].dump()) !=
          std::string::npos);
    auto digest = json["components"][0]["install-digest"]["digest-bytes"].get<std::string>();
    CHECK(to_hex(test::read_suit_vector(example.binaries.back())).find(digest) != std::string::npos);
  }
}
