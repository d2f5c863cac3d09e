// Tests for service/transfer_voucher: the exact bytes a voucher's signature covers, a voucher that round-trips
// through its file and verifies (checked by OpenSSL directly), forged, edited and out-of-order ones refused, the
// strict parser, and the voucher key's file (created 0600, reloaded the same, refused when others may read it).
#include <doctest/doctest.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <filesystem>
#include <memory>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/files.hpp"
#include "service/transfer_voucher.hpp"
#include "signing/file_key.hpp"
#include "signing/signer.hpp"
#include "tests/support/crafted_keys.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;
using namespace kiln::service;
using Json = nlohmann::json;

namespace {

TransferVoucher sample_voucher(const VoucherKey& key) {
  TransferVoucher v;
  v.id = "xfer_0123456789abcdef0123456789abcdef";
  v.from_tenant = "acme";
  v.to_tenant = "globex";
  v.devices = {"dev-a", "dev-b"};
  v.issued_at = "2026-01-01T00:00:00Z";
  v.expires_at = "2026-01-02T00:00:00Z";
  v.key_id = key.key_id();
  v.signature = key.sign(voucher_signed_bytes(v));
  return v;
}

// Ed25519 verification by OpenSSL itself, not through kiln.
bool openssl_verifies(ByteView public_key_der, std::string_view message, ByteView signature) {
  const unsigned char* p = public_key_der.data();
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      d2i_PUBKEY(nullptr, &p, static_cast<long>(public_key_der.size())), EVP_PKEY_free);
  REQUIRE(key);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  REQUIRE(EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) == 1);
  return EVP_DigestVerify(ctx.get(), signature.data(), signature.size(),
                          reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
}

}  // namespace

TEST_CASE("transfer_voucher: the signed bytes are the documented prefix and sorted compact JSON; the key id is the SPKI's SHA-256") {
  VoucherKey key(test::rfc8032_test2_pem());
  CHECK(to_hex(key.public_key_der()) == std::string("302a300506032b6570032100") + test::rfc8032_test2_public_hex);
  CHECK(key.key_id() == "deb2ded39dc26fce0e6085b6fc34bf6b5941913bbfe2ea614113cff9e004c170");
  CHECK(to_hex(key.sign(std::string(1, '\x72'))) == test::rfc8032_test2_signature_hex);
  auto v = sample_voucher(key);
  CHECK(voucher_signed_bytes(v) ==
        "kiln-device-transfer-v1\n"
        R"({"devices":["dev-a","dev-b"],"expires_at":"2026-01-02T00:00:00Z","from_tenant":"acme",)"
        R"("id":"xfer_0123456789abcdef0123456789abcdef","issued_at":"2026-01-01T00:00:00Z",)"
        R"("key_id":"deb2ded39dc26fce0e6085b6fc34bf6b5941913bbfe2ea614113cff9e004c170","to_tenant":"globex","version":1})");
  CHECK(openssl_verifies(key.public_key_der(), voucher_signed_bytes(v), v.signature));
}

TEST_CASE("transfer_voucher: a voucher round-trips through its file, however indented, and still verifies") {
  auto key = VoucherKey::ephemeral();
  auto v = sample_voucher(*key);
  for (int indent : {-1, 2, 8}) {
    CAPTURE(indent);
    auto parsed = parse_transfer_voucher(voucher_json(v).dump(indent));
    CHECK(parsed.id == v.id);
    CHECK(parsed.from_tenant == "acme");
    CHECK(parsed.to_tenant == "globex");
    CHECK(parsed.devices == v.devices);
    CHECK(parsed.issued_at == v.issued_at);
    CHECK(parsed.expires_at == v.expires_at);
    CHECK(parsed.key_id == key->key_id());
    CHECK(parsed.signature == v.signature);
    CHECK(voucher_signed_bytes(parsed) == voucher_signed_bytes(v));
    CHECK(voucher_signature_valid(parsed, key->public_key_der()));
  }
}

TEST_CASE("transfer_voucher: a forged voucher (another key, or our key id over another key's signature) does not verify") {
  auto key = VoucherKey::ephemeral();
  auto forger = VoucherKey::ephemeral();
  auto v = sample_voucher(*key);
  // Signed by the forger but naming our key: the key id matches, the signature does not.
  auto forged = v;
  forged.signature = forger->sign(voucher_signed_bytes(forged));
  CHECK_FALSE(voucher_signature_valid(forged, key->public_key_der()));
  // The forger's own key: its id is not the one the voucher names.
  CHECK_FALSE(voucher_signature_valid(forged, forger->public_key_der()));
  // Each value edited after signing breaks the signature.
  for (auto edit : {+[](TransferVoucher& t) { t.to_tenant = "initech"; },
                    +[](TransferVoucher& t) { t.expires_at = "2027-01-02T00:00:00Z"; },
                    +[](TransferVoucher& t) { t.devices.push_back("dev-c"); },
                    +[](TransferVoucher& t) { t.id.back() = '0'; }}) {
    auto edited = v;
    edit(edited);
    CHECK_FALSE(voucher_signature_valid(edited, key->public_key_der()));
  }
  CHECK(voucher_signature_valid(v, key->public_key_der()));
}

TEST_CASE("transfer_voucher: the parser is strict and names what is wrong (verification_failed)") {
  auto key = VoucherKey::ephemeral();
  auto v = sample_voucher(*key);
  auto with = [&](const char* field, const Json& value) {
    auto j = voucher_json(v);
    if (value.is_null())
      j.erase(field);
    else
      j[field] = value;
    return j.dump();
  };
  for (const auto& bad :
       {with("version", 2), with("version", "1"), with("id", "x"), with("devices", Json::array()),
        with("devices", Json::array({"a", "a"})), with("devices", Json::array({"bad uid"})),
        with("issued_at", "yesterday"), with("issued_at", "2026-01-01T00:00:00+00:00"),
        with("expires_at", "2025-01-01T00:00:00Z"), with("expires_at", "2026-01-01T00:00:00Z"),
        with("signature", "AAAA"), with("key_id", "zz"), with("key_id", std::string(64, 'A')), with("extra", 1),
        with("to_tenant", nullptr), with("from_tenant", ""), with("to_tenant", std::string(129, 't')),
        std::string("{"), std::string("null"), std::string(max_voucher_bytes + 1, ' ')}) {
    INFO(bad.substr(0, 200));
    CHECK(test::exit_code_of([&] { parse_transfer_voucher(bad); }) == ExitCode::verification_failed);
  }
  CHECK_THROWS_WITH_AS(parse_transfer_voucher(with("expires_at", "2025-01-01T00:00:00Z")),
                       doctest::Contains("expires_at must be after issued_at"), Error);
  CHECK_THROWS_WITH_AS(parse_transfer_voucher(with("devices", Json::array({"dev-a", "dev-a"}))),
                       doctest::Contains("device dev-a is named twice"), Error);
}

TEST_CASE("transfer_voucher: the key file is created 0600, reloads as the same key, and is refused when others may read it") {
  test::TempDir dir;
  auto path = dir.file("voucher-key.pem");
  auto created = VoucherKey::load_or_create(path);
  CHECK((std::filesystem::status(path).permissions() & std::filesystem::perms::all) ==
        (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write));
  auto reloaded = VoucherKey::load_or_create(path);
  CHECK(reloaded->key_id() == created->key_id());
  auto v = sample_voucher(*created);
  CHECK(voucher_signature_valid(v, reloaded->public_key_der()));

  std::filesystem::permissions(path, std::filesystem::perms::group_read, std::filesystem::perm_options::add);
  CHECK(test::exit_code_of([&] { VoucherKey::load_or_create(path); }) == ExitCode::authentication);
  // Not an Ed25519 key.
  CHECK_THROWS_WITH_AS(VoucherKey(generate_private_key_pem(KeyType::ecdsa_p256, std::nullopt)),
                       doctest::Contains("not an Ed25519 private key"), Error);
}
