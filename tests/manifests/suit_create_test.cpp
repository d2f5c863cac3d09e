// Tests for manifests/suit_create: the draft's UUIDs and its example envelopes from their JSON descriptions.
#include <doctest/doctest.h>

#include "core/error.hpp"
#include "tests/support/errors.hpp"
#include "manifests/suit_create.hpp"
#include "manifests/suit_json.hpp"
#include "signing/key_ref.hpp"
#include "tests/manifests/test_keys.hpp"

using namespace kiln;

namespace {

nlohmann::ordered_json example_description(int n) {
  return nlohmann::ordered_json::parse(read_text_file(test::suit_vector("example" + std::to_string(n) + ".json")));
}

// Our envelope with the draft's signature bytes put in place of ours (ECDSA signatures are randomized).
Bytes with_signature_of(suit::Envelope ours, const Bytes& theirs) {
  suit::Envelope reference = suit::parse_envelope(theirs);
  suit::AuthenticationWrapper wrapper = suit::authentication(ours);
  wrapper.authentication_blocks = suit::authentication(reference).authentication_blocks;
  suit::set_authentication(ours, wrapper);
  return suit::encode_envelope(ours);
}

}  // namespace

TEST_CASE("create: vendor and class ids are the draft's UUIDv5 derivations") {
  Bytes vendor = suit::vendor_id_from_domain("arm.com");
  CHECK(suit::uuid_string(vendor) == "fa6b4a53-d5ad-5fdf-be9d-e663e4d41ffe");
  CHECK(suit::uuid_string(suit::class_id_from_name(vendor, "suit")) == "1492af14-2569-5e48-bf42-9b2d51f2ab45");
  CHECK(suit::parse_uuid("fa6b4a53-d5ad-5fdf-be9d-e663e4d41ffe") == vendor);
  CHECK_THROWS_AS(suit::parse_uuid("fa6b4a53"), Error);
}

TEST_CASE("create: the draft's example descriptions compile to the draft's unsigned envelopes") {
  for (int n : {0, 1, 3, 4, 5}) {
    CAPTURE(n);
    Bytes expected = test::read_suit_vector("example" + std::to_string(n) + ".unsigned.suit");
    CHECK(suit::encode_envelope(suit::compile_description(example_description(n))) == expected);
  }
}

TEST_CASE("create: signed with the draft key, every example equals the draft's except the ECDSA signature") {
  auto signer = open_signer(test::suit_vector("draft_private_key.pem"));
  Bytes draft_key = load_public_key(test::suit_vector("draft_public_key.pem"));
  for (int n = 0; n <= 5; ++n) {
    CAPTURE(n);
    suit::Envelope ours = suit::create_envelope(example_description(n), {}, {signer.get()});
    Bytes expected = test::read_suit_vector("example" + std::to_string(n) + ".signed.suit");
    Bytes encoded = suit::encode_envelope(ours);
    CHECK(encoded.size() == expected.size());
    CHECK(encoded != expected);  // a fresh signature
    CHECK(with_signature_of(ours, expected) == expected);
    auto block = cose::parse_sign1(suit::authentication(ours).authentication_blocks.at(0), "signature");
    CHECK(cose::verify_detached(block, draft_key, suit::authentication(ours).digest_encoded));
  }
}

TEST_CASE("create: options build a manifest over the image files with streaming digests") {
  test::TempDir dir;
  write_file_atomic(dir.file("boot.bin"), Bytes(3000, 0x5a));
  write_file_atomic(dir.file("radio.bin"), Bytes(100, 0x11));
  suit::CreateOptions options;
  options.components.push_back({dir.file("boot.bin"), "https://example.com/boot.bin"});
  options.components.push_back({dir.file("radio.bin"), "https://example.com/radio.bin"});
  options.vendor_id = suit::vendor_id_from_domain("arm.com");
  options.class_id = suit::class_id_from_name(options.vendor_id, "suit");
  options.sequence_number = 1700000000;
  options.manifest_description = "two images";
  options.vendor_domain = "arm.com";
  options.severable = true;
  suit::Envelope envelope = suit::create_envelope(suit::describe(options), {}, {});
  suit::Json json = suit::envelope_to_json(envelope);
  const auto& m = json["manifest"];
  CHECK(m["manifest-sequence-number"] == 1700000000);
  CHECK(m["common"]["components"].dump() == R"([["00"],["01"]])");
  const auto& first = m["common"]["shared-sequence"][1]["directive-override-parameters"];
  CHECK(first["vendor-id"] == "fa6b4a53-d5ad-5fdf-be9d-e663e4d41ffe");
  CHECK(first["class-id"] == "1492af14-2569-5e48-bf42-9b2d51f2ab45");
  CHECK(first["image-digest"]["digest-bytes"] == to_hex(digest(HashAlg::sha256, Bytes(3000, 0x5a))));
  CHECK(first["image-size"] == 3000);
  // Two components: the bootable first one is selected before invoking it.
  CHECK(m["invoke"].dump() == R"([{"directive-set-component-index":0},{"directive-invoke":2}])");
  CHECK(m["install"]["algorithm-id"] == "sha256");  // severable: the digest in the manifest
  CHECK(json["install"][1]["directive-override-parameters"]["uri"] == "https://example.com/boot.bin");
  CHECK(json["text"]["en-US"]["manifest-description"] == "two images");
  CHECK(json["text"]["en-US"]["[\"00\"]"]["vendor-domain"] == "arm.com");
}

TEST_CASE("create: descriptions without what the templates need are refused by field") {
  CHECK_THROWS_WITH_AS(suit::compile_description(nlohmann::ordered_json::parse(R"({"components": []})")),
                       doctest::Contains("components"), Error);
  auto no_digest = example_description(0);
  no_digest["components"][0].erase("install-digest");
  CHECK_THROWS_WITH_AS(suit::compile_description(no_digest), doctest::Contains("install-digest"), Error);
  auto no_sequence = example_description(0);
  no_sequence.erase("manifest-sequence-number");
  CHECK_THROWS_WITH_AS(suit::compile_description(no_sequence), doctest::Contains("manifest-sequence-number"), Error);
}

TEST_CASE("create request: names become the draft's UUIDv5 ids, URIs pair with components, auto is now") {
  test::TempDir dir;
  write_file_atomic(dir.file("boot.bin"), Bytes(64, 0x5a));
  suit::CreateRequest request;
  request.components = {dir.file("boot.bin")};
  request.uris = {"https://example.com/boot.bin"};
  request.vendor_domain = "arm.com";
  request.class_name = "suit";
  request.sequence = "auto";
  auto description = suit::describe_request(request, 1800000000);
  suit::Envelope envelope = suit::create_envelope(description, {}, {});
  const auto json = suit::envelope_to_json(envelope);
  const auto& m = json["manifest"];
  CHECK(m["manifest-sequence-number"] == 1800000000);
  // One component: the shared sequence overrides its parameters without selecting a component first.
  suit::Json parameters;
  for (const auto& command : m["common"]["shared-sequence"])
    if (command.contains("directive-override-parameters")) parameters = command["directive-override-parameters"];
  CHECK(parameters["vendor-id"] == "fa6b4a53-d5ad-5fdf-be9d-e663e4d41ffe");
  CHECK(parameters["class-id"] == "1492af14-2569-5e48-bf42-9b2d51f2ab45");

  request.sequence = "42";
  request.vendor_domain.clear();
  request.class_name.clear();
  request.vendor_id = "fa6b4a53-d5ad-5fdf-be9d-e663e4d41ffe";
  CHECK(suit::envelope_to_json(suit::create_envelope(suit::describe_request(request, 1), {}, {}))["manifest"]
                                                     ["manifest-sequence-number"] == 42);
}

TEST_CASE("create request: a missing or bad sequence, unpaired URIs and a class name without a vendor are usage errors") {
  auto code_of = [](const suit::CreateRequest& r) { return test::exit_code_of([&] { suit::describe_request(r, 1); }); };

  suit::CreateRequest base;
  base.components = {"a.bin", "b.bin"};
  base.vendor_domain = "arm.com";
  base.sequence = "1";
  for (const char* bad : {"", "-1", "1.0", "0x10", " 1", "18446744073709551616", "auto1"}) {
    const std::string shown = bad;
    CAPTURE(shown);
    auto r = base;
    r.sequence = bad;
    CHECK(code_of(r) == ExitCode::usage);
  }
  auto unpaired = base;
  unpaired.uris = {"https://example.com/a.bin"};
  CHECK(code_of(unpaired) == ExitCode::usage);
  auto not_utf8 = base;
  not_utf8.options.manifest_description = "caf\xe9";  // Latin-1, not UTF-8
  CHECK(code_of(not_utf8) == ExitCode::usage);
  auto bad_uri = base;
  bad_uri.uris = {"https://example.com/\xff", "https://example.com/b"};
  CHECK(code_of(bad_uri) == ExitCode::usage);
  auto no_vendor = base;
  no_vendor.vendor_domain.clear();
  no_vendor.class_name = "suit";
  CHECK(code_of(no_vendor) == ExitCode::usage);
  CHECK(suit::parse_sequence_number("18446744073709551615", 0) == 18446744073709551615ull);
  CHECK(suit::parse_sequence_number("auto", 7) == 7);
}
