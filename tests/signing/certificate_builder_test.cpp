// Tests for signing/certificate_builder: a certificate started here and signed through a Signer (ECDSA P-256,
// P-384, Ed25519) verifies with OpenSSL under the signer's public key and names the scheme's algorithm; other
// key types are refused before anything is signed.
#include <doctest/doctest.h>
#include <openssl/x509.h>

#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/certificate_builder.hpp"
#include "signing/file_key.hpp"
#include "signing/openssl_ptr.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;

namespace {

std::unique_ptr<Signer> new_signer(const test::TempDir& dir, const std::string& name, KeyType type) {
  write_file_atomic(dir.file(name), as_bytes(generate_private_key_pem(type, std::nullopt)), 0600);
  return load_file_signer(dir.file(name), std::nullopt);
}

ossl::Ptr<EVP_PKEY> public_key(const Signer& signer) { return decode_public_key(signer.public_key_der()); }

}  // namespace

TEST_CASE("certificate_builder: a self-issued certificate signed through each Signer type verifies with its key") {
  test::TempDir dir;
  const std::pair<KeyType, int> cases[] = {{KeyType::ecdsa_p256, NID_ecdsa_with_SHA256},
                                           {KeyType::ecdsa_p384, NID_ecdsa_with_SHA384},
                                           {KeyType::ed25519, NID_ED25519}};
  for (auto [type, nid] : cases) {
    CAPTURE(key_type_name(type));
    auto signer = new_signer(dir, std::string(key_type_name(type)) + ".pem", type);
    auto key = public_key(*signer);
    auto cert = start_certificate(key.get(), "Acme", "root", nullptr, 3600);
    auto scheme = certificate_scheme(*signer, "tests sign with P-256, P-384 or Ed25519");
    CHECK(scheme.nid == nid);
    sign_certificate(cert.get(), *signer, scheme);
    CHECK(X509_get_signature_nid(cert.get()) == nid);
    // Re-encoded and parsed again, as a verifier would see it.
    int length = i2d_X509(cert.get(), nullptr);
    REQUIRE(length > 0);
    Bytes der(static_cast<std::size_t>(length));
    unsigned char* out = der.data();
    i2d_X509(cert.get(), &out);
    const unsigned char* in = der.data();
    ossl::Ptr<X509> back(d2i_X509(nullptr, &in, length));
    REQUIRE(back);
    CHECK(X509_verify(back.get(), key.get()) == 1);
    // Another key does not verify it.
    auto other = new_signer(dir, "other.pem", type);
    CHECK(X509_verify(back.get(), public_key(*other).get()) != 1);
  }
}

TEST_CASE("certificate_builder: an RSA signer is refused with the caller's reason, exit 2") {
  test::TempDir dir;
  auto rsa = new_signer(dir, "rsa.pem", KeyType::rsa_2048);
  try {
    certificate_scheme(*rsa, "this use signs with ECDSA or Ed25519");
    FAIL("an RSA key was accepted");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::usage);
    CHECK(std::string(e.what()).find("is an rsa-2048 key: this use signs with ECDSA or Ed25519") != std::string::npos);
  }
}
