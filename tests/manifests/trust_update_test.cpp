// Tests for manifests/trust_update: the format, creation rules and the board's apply rule.
#include <doctest/doctest.h>

#include "core/error.hpp"
#include "manifests/trust_update.hpp"
#include "tests/manifests/test_keys.hpp"

using namespace kiln;

namespace {

struct Keys {
  test::TempDir dir;
  std::unique_ptr<Signer> a = test::make_signer(dir, KeyType::ecdsa_p256, "a.pem");
  std::unique_ptr<Signer> b = test::make_signer(dir, KeyType::ecdsa_p256, "b.pem");
  std::unique_ptr<Signer> c = test::make_signer(dir, KeyType::ed25519, "c.pem");
  Bytes boot1 = Bytes(32, 0x11), boot2 = Bytes(32, 0x22);
};

trust::TrustUpdate update(const Keys& k, std::uint64_t version) {
  return trust::TrustUpdate{"Thermo", version, {k.b->public_key_der(), k.c->public_key_der()}, 2, {k.boot1, k.boot2}, {}};
}

// The factory state: keys a and b, 2 of 2, boot key 1, no trust version, product not bound.
trust::TrustState factory(const Keys& k) {
  return trust::TrustState{"", 0, {k.a->public_key_der(), k.b->public_key_der()}, 2, {k.boot1}};
}

Bytes signed_by(const trust::TrustUpdate& u, std::initializer_list<const Signer*> signers) {
  suit::Envelope envelope = trust::create(u);
  for (const Signer* s : signers) suit::add_signature(envelope, *s);
  return suit::encode_envelope(envelope);
}

ExitCode create_error(const trust::TrustUpdate& u) {
  try {
    trust::create(u);
  } catch (const Error& e) {
    return e.code();
  }
  return ExitCode::ok;
}

}  // namespace

TEST_CASE("trust update: create, sign, parse round trip; accepted with the threshold of the keys in force") {
  Keys k;
  Bytes bytes = signed_by(update(k, 1), {k.a.get(), k.b.get()});
  trust::TrustUpdate parsed = trust::parse(bytes);
  CHECK(parsed.product == "Thermo");
  CHECK(parsed.version == 1);
  CHECK(parsed.manifest_keys == update(k, 1).manifest_keys);
  CHECK(parsed.manifest_threshold == 2);
  CHECK(parsed.boot_key_hashes == std::vector<Bytes>{k.boot1, k.boot2});
  trust::Decision d = trust::check(bytes, factory(k));
  REQUIRE_MESSAGE(d.ok(), d.reason);
  trust::TrustState after = trust::apply(d.update);
  CHECK(after.product == "Thermo");
  CHECK(after.version == 1);
  CHECK(after.manifest_threshold == 2);
}

TEST_CASE("trust update: refused below threshold, replayed, older, for another product, truncated, by old keys") {
  Keys k;
  trust::TrustState state = factory(k);
  SUBCASE("one signature of two required") {
    trust::Decision d = trust::check(signed_by(update(k, 1), {k.a.get()}), state);
    CHECK(d.failed_check == "signature");
    CHECK(d.reason.find("1 valid signature from the trusted keys, 2 required") != std::string::npos);
  }
  SUBCASE("the same key twice counts once") {
    CHECK(trust::check(signed_by(update(k, 1), {k.a.get(), k.a.get()}), state).failed_check == "signature");
  }
  SUBCASE("replayed and older") {
    Bytes v1 = signed_by(update(k, 1), {k.a.get(), k.b.get()});
    trust::Decision d = trust::check(v1, state);
    REQUIRE(d.ok());
    state = trust::apply(d.update);
    trust::Decision replay = trust::check(v1, state);
    CHECK(replay.failed_check == "version");
    CHECK(replay.reason.find("not above the installed 1") != std::string::npos);
    // Version 2 under the new keys (b, c), then version 1 again is older.
    Bytes v2 = signed_by(update(k, 2), {k.b.get(), k.c.get()});
    trust::Decision d2 = trust::check(v2, state);
    REQUIRE_MESSAGE(d2.ok(), d2.reason);
    state = trust::apply(d2.update);
    CHECK(trust::check(v1, state).failed_check == "version");
    // Version 3 signed by the retired key a and b: below threshold under the set in force.
    CHECK(trust::check(signed_by(update(k, 3), {k.a.get(), k.b.get()}), state).failed_check == "signature");
  }
  SUBCASE("another product") {
    state.product = "Oven";
    trust::Decision d = trust::check(signed_by(update(k, 1), {k.a.get(), k.b.get()}), state);
    CHECK(d.failed_check == "product");
    CHECK(d.reason.find("\"Thermo\"") != std::string::npos);
  }
  SUBCASE("truncated or not a trust update") {
    Bytes bytes = signed_by(update(k, 1), {k.a.get(), k.b.get()});
    for (std::size_t cut : {std::size_t{0}, std::size_t{1}, bytes.size() / 2, bytes.size() - 1}) {
      CAPTURE(cut);
      trust::Decision d = trust::check(ByteView(bytes.data(), cut), state);
      CHECK(d.failed_check == "malformed");
      CHECK(d.reason.find("not a valid trust update") != std::string::npos);
    }
    try {
      trust::parse(ByteView(bytes.data(), bytes.size() - 3));
      FAIL("parsed a truncated update");
    } catch (const Error& e) {
      CHECK(e.code() == ExitCode::verification_failed);
    }
  }
}

TEST_CASE("trust update: never an empty key set, an empty boot-key set or a threshold above N") {
  Keys k;
  auto u = update(k, 1);
  CHECK(create_error(u) == ExitCode::ok);
  auto no_keys = u;
  no_keys.manifest_keys.clear();
  no_keys.manifest_threshold = 1;
  CHECK(create_error(no_keys) == ExitCode::usage);
  auto no_boot = u;
  no_boot.boot_key_hashes.clear();
  CHECK(create_error(no_boot) == ExitCode::usage);
  auto too_high = u;
  too_high.manifest_threshold = 3;
  CHECK(create_error(too_high) == ExitCode::usage);
  auto zero = u;
  zero.manifest_threshold = 0;
  CHECK(create_error(zero) == ExitCode::usage);
  auto version0 = u;
  version0.version = 0;
  CHECK(create_error(version0) == ExitCode::usage);
  auto twice = u;
  twice.manifest_keys.push_back(twice.manifest_keys.front());
  CHECK(create_error(twice) == ExitCode::usage);
  auto short_hash = u;
  short_hash.boot_key_hashes = {Bytes(31, 1)};
  CHECK(create_error(short_hash) == ExitCode::usage);

  // Made by hand (not through create), a signed update with an empty set is refused by the board's rule.
  suit::Envelope envelope = trust::create(u);
  cbor::Value manifest = suit::manifest(envelope);
  cbor::Value payload = cbor::unwrap(*manifest.find(trust::trust_payload_key), "payload");
  payload.set(trust::payload_key::boot_key_hashes, cbor::Value::array());
  manifest.set(trust::trust_payload_key, cbor::wrap(payload));
  suit::set_manifest(envelope, manifest);
  suit::add_signature(envelope, *k.a);
  suit::add_signature(envelope, *k.b);
  trust::Decision d = trust::check(suit::encode_envelope(envelope), factory(k));
  CHECK(d.failed_check == "sets");
  CHECK(d.reason.find("boot-key set is empty") != std::string::npos);
}

TEST_CASE("trust update: a firmware manifest is no trust update") {
  Bytes firmware = test::read_suit_vector("example0.signed.suit");
  trust::Decision d = trust::check(firmware, trust::TrustState{});
  CHECK(d.failed_check == "malformed");
  CHECK(d.reason.find("no trust payload") != std::string::npos);
}
