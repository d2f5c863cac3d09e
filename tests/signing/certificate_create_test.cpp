// Tests for signing/certificate_create: certificates made through the Signer verify with OpenSSL's own chain
// verification (X509_verify_cert), carry the asked extensions, and every refused request has its code.
#include <doctest/doctest.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "core/error.hpp"
#include "core/files.hpp"
#include "core/time.hpp"
#include "signing/certificate_create.hpp"
#include "signing/file_key.hpp"
#include "signing/openssl_ptr.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/vectors.hpp"

using namespace kiln;
using kiln::test::exit_code_of;

namespace {

std::unique_ptr<Signer> new_signer(const test::TempDir& dir, const std::string& name, KeyType type) {
  write_file_atomic(dir.file(name), as_bytes(generate_private_key_pem(type, std::nullopt)), 0600);
  return load_file_signer(dir.file(name), std::nullopt);
}

ossl::Ptr<X509> x509(const Bytes& der) {
  const unsigned char* p = der.data();
  ossl::Ptr<X509> cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  REQUIRE(cert);
  return cert;
}

// OpenSSL's verdict on `leaf` with `root` as the only trust anchor (and `intermediate` if given).
int verify_chain(const Bytes& root, const Bytes& leaf, const Bytes* intermediate = nullptr) {
  auto root_cert = x509(root);
  auto leaf_cert = x509(leaf);
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, root_cert.get());
  STACK_OF(X509)* untrusted = sk_X509_new_null();
  ossl::Ptr<X509> mid;
  if (intermediate) {
    mid = x509(*intermediate);
    sk_X509_push(untrusted, mid.get());
  }
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, leaf_cert.get(), untrusted);
  int ok = X509_verify_cert(ctx);
  int error = ok == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
  X509_STORE_CTX_free(ctx);
  sk_X509_free(untrusted);
  X509_STORE_free(store);
  return error;
}

}  // namespace

TEST_CASE("certificate_create: a CA, an intermediate and a leaf form a chain OpenSSL verifies") {
  test::TempDir dir;
  auto root_key = new_signer(dir, "root.pem", KeyType::ecdsa_p384);
  auto mid_key = new_signer(dir, "mid.pem", KeyType::ed25519);
  auto leaf_key = new_signer(dir, "leaf.pem", KeyType::ecdsa_p256);
  auto root = create_certificate({"/CN=Root CA/O=Example", root_key->public_key_der(), true, 3650}, *root_key, std::nullopt);
  auto mid = create_certificate({"/CN=Station CA", mid_key->public_key_der(), true, 365}, *root_key, root);
  auto leaf = create_certificate({"/CN=board-0042", leaf_key->public_key_der(), false, 30}, *mid_key, mid);
  CHECK(verify_chain(root, mid) == X509_V_OK);
  CHECK(verify_chain(root, leaf, &mid) == X509_V_OK);
  // Another root of the same name is no anchor for it: the signatures are what OpenSSL follows.
  auto other_key = new_signer(dir, "other.pem", KeyType::ecdsa_p384);
  auto other = create_certificate({"/CN=Root CA/O=Example", other_key->public_key_der(), true, 3650}, *other_key,
                                  std::nullopt);
  CHECK(verify_chain(other, leaf, &mid) != X509_V_OK);
  CHECK(X509_check_ca(x509(leaf).get()) == 0);
  CHECK(X509_check_ca(x509(mid).get()) != 0);

  auto info = describe_certificate(leaf);
  CHECK(info.subject == "CN = board-0042");
  CHECK(info.issuer == "CN = Station CA");
  CHECK_FALSE(info.ca);
  CHECK_FALSE(info.self_signed);
  CHECK_FALSE(info.self_signature_ok);
  CHECK(info.key_type == KeyType::ecdsa_p256);
  CHECK(info.public_key_der == leaf_key->public_key_der());
  CHECK(info.fingerprint == to_hex(digest(HashAlg::sha256, leaf)));
  CHECK(info.serial_hex.size() == 32);  // 16 random bytes, top bits 01: always 16 bytes, always positive
  CHECK((info.serial_hex[0] >= '4' && info.serial_hex[0] <= '7'));
  CHECK(info.not_before.size() == 20);
  auto from = unix_seconds(info.not_before);
  auto to = unix_seconds(info.not_after);
  REQUIRE(from);
  REQUIRE(to);
  CHECK(*to - *from == 30 * 86400);

  auto root_info = describe_certificate(root);
  CHECK(root_info.subject == "CN = Root CA, O = Example");
  CHECK(root_info.ca);
  CHECK(root_info.self_signed);
  CHECK(root_info.self_signature_ok == true);
  CHECK(root_info.key_type == KeyType::ecdsa_p384);
}

TEST_CASE("certificate_create: extensions say CA or not, and an issued certificate names its issuer's key") {
  test::TempDir dir;
  auto ca_key = new_signer(dir, "ca.pem", KeyType::ecdsa_p256);
  auto leaf_key = new_signer(dir, "leaf.pem", KeyType::ecdsa_p256);
  auto ca = create_certificate({"/CN=CA", ca_key->public_key_der(), true, 10}, *ca_key, std::nullopt);
  auto leaf = create_certificate({"/CN=leaf", leaf_key->public_key_der(), false, 10}, *ca_key, ca);
  auto ca_cert = x509(ca);
  auto leaf_cert = x509(leaf);
  CHECK(X509_get_version(ca_cert.get()) == 2);  // v3
  CHECK((X509_get_key_usage(ca_cert.get()) & (KU_KEY_CERT_SIGN | KU_CRL_SIGN | KU_DIGITAL_SIGNATURE)) ==
        (KU_KEY_CERT_SIGN | KU_CRL_SIGN | KU_DIGITAL_SIGNATURE));
  CHECK(X509_get_key_usage(leaf_cert.get()) == KU_DIGITAL_SIGNATURE);
  CHECK(X509_get_signature_nid(leaf_cert.get()) == NID_ecdsa_with_SHA256);
  for (X509* cert : {ca_cert.get(), leaf_cert.get()}) {
    int critical = -1;
    auto* constraints = static_cast<BASIC_CONSTRAINTS*>(X509_get_ext_d2i(cert, NID_basic_constraints, &critical, nullptr));
    REQUIRE(constraints);
    CHECK(critical == 1);
    CHECK((constraints->ca != 0) == (cert == ca_cert.get()));
    BASIC_CONSTRAINTS_free(constraints);
  }
  // The leaf's authority key identifier is the CA's subject key identifier.
  const ASN1_OCTET_STRING* ca_skid = X509_get0_subject_key_id(ca_cert.get());
  const ASN1_OCTET_STRING* leaf_akid = X509_get0_authority_key_id(leaf_cert.get());
  REQUIRE(ca_skid);
  REQUIRE(leaf_akid);
  CHECK(ASN1_OCTET_STRING_cmp(ca_skid, leaf_akid) == 0);
  CHECK(X509_get0_authority_key_id(ca_cert.get()) == nullptr);  // self-signed: none
}

TEST_CASE("certificate_create: refused requests, each with its code and message") {
  test::TempDir dir;
  auto ca_key = new_signer(dir, "ca.pem", KeyType::ecdsa_p256);
  auto other_key = new_signer(dir, "other.pem", KeyType::ecdsa_p256);
  auto ca = create_certificate({"/CN=CA", ca_key->public_key_der(), true, 10}, *ca_key, std::nullopt);
  auto not_ca = create_certificate({"/CN=leaf", other_key->public_key_der(), false, 10}, *ca_key, ca);
  auto spki = other_key->public_key_der();

  CHECK_THROWS_WITH_AS(create_certificate({"CN=x", spki, false, 10}, *other_key, std::nullopt),
                       "subject 'CN=x' is not in the form /CN=NAME[/O=ORG...]", Error);
  CHECK_THROWS_WITH_AS(create_certificate({"/CN=x/O", spki, false, 10}, *other_key, std::nullopt),
                       "subject part 'O' is not FIELD=VALUE", Error);
  CHECK_THROWS_WITH_AS(create_certificate({"/CN=", spki, false, 10}, *other_key, std::nullopt),
                       "subject part 'CN=' is not FIELD=VALUE", Error);
  CHECK_THROWS_WITH_AS(create_certificate({"/XYZ=1", spki, false, 10}, *other_key, std::nullopt),
                       "'XYZ' is not a subject field kiln knows (CN, O, OU, C, ST, L...)", Error);
  CHECK_THROWS_WITH_AS(create_certificate({"/CN=x", spki, false, 0}, *other_key, std::nullopt),
                       "--days 0 is outside 1 to 36500", Error);
  CHECK_THROWS_WITH_AS(create_certificate({"/CN=x", spki, false, 36501}, *other_key, std::nullopt),
                       "--days 36501 is outside 1 to 36500", Error);
  CHECK_THROWS_WITH_AS(create_certificate({"/CN=x", spki, false, 10}, *ca_key, std::nullopt),
                       "a self-signed certificate is signed by its own key", Error);
  CHECK(exit_code_of([&] { create_certificate({"/CN=x", spki, false, 0}, *other_key, std::nullopt); }) ==
        ExitCode::usage);

  CHECK_THROWS_WITH_AS(create_certificate({"/CN=x", spki, false, 10}, *other_key, ca),
                       "other.pem is not the key of the issuer certificate", Error);
  CHECK_THROWS_WITH_AS(create_certificate({"/CN=x", ca_key->public_key_der(), false, 10}, *other_key, not_ca),
                       "the issuer certificate is not a CA (basicConstraints CA:FALSE)", Error);
  CHECK(exit_code_of([&] { create_certificate({"/CN=x", spki, false, 10}, *other_key, ca); }) ==
        ExitCode::verification_failed);
  Bytes damaged = ca;
  damaged.push_back(0);
  CHECK_THROWS_WITH_AS(create_certificate({"/CN=x", spki, false, 10}, *ca_key, damaged),
                       "the issuer certificate is not an X.509 certificate", Error);

  auto rsa = load_file_signer(test::vector("mcuboot/rsa-2048.pem"), std::nullopt);
  CHECK_THROWS_WITH_AS(create_certificate({"/CN=x", rsa->public_key_der(), true, 10}, *rsa, std::nullopt),
                       "rsa-2048.pem is an rsa-2048 key: kiln cert signs with ECDSA P-256/P-384 or Ed25519 keys", Error);
}

TEST_CASE("certificate_create: PEM and DER files give the same DER; other bytes are refused") {
  test::TempDir dir;
  auto key = new_signer(dir, "k.pem", KeyType::ed25519);
  auto der = create_certificate({"/CN=pem", key->public_key_der(), true, 1}, *key, std::nullopt);
  auto pem = certificate_to_pem(der);
  CHECK(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
  CHECK(certificate_der_from_file_bytes(as_bytes(pem), "ca.pem") == der);
  CHECK(certificate_der_from_file_bytes(der, "ca.der") == der);
  CHECK(describe_certificate(der).key_type == KeyType::ed25519);
  CHECK(X509_get_signature_nid(x509(der).get()) == NID_ED25519);
  CHECK_THROWS_WITH_AS(certificate_der_from_file_bytes(as_bytes("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
                                                       "ca.pem"),
                       "ca.pem holds a damaged PEM certificate", Error);
  CHECK_THROWS_WITH_AS(certificate_der_from_file_bytes(as_bytes("hello"), "ca.der"), "ca.der is not an X.509 certificate",
                       Error);
  CHECK(exit_code_of([] { describe_certificate(as_bytes("hello")); }) == ExitCode::failure);
}
