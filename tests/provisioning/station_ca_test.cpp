// Tests for the station CA: CSR checks, issued chains accepted by the openssl CLI, attestation.
#include <doctest/doctest.h>

#include <openssl/x509.h>

#include "core/error.hpp"
#include "core/files.hpp"
#include "provisioning/station_ca.hpp"
#include "signing/key_ref.hpp"
#include "tests/provisioning/station_fixture.hpp"
#include "transport/smp_client.hpp"

using namespace kiln;

namespace {

Bytes make_csr(const test::TempDir& dir, const std::string& name) {
  write_file_atomic(dir.file(name + ".key"), as_bytes(generate_private_key_pem(KeyType::ecdsa_p256, std::nullopt)), 0600);
  auto made = test::run_process("/usr/bin/openssl", {"req", "-new", "-key", dir.file(name + ".key"), "-subj", "/CN=" + name,
                                            "-outform", "DER", "-out", dir.file(name + ".csr")});
  REQUIRE_MESSAGE(made.exit_code == 0, made.err);
  return read_file(dir.file(name + ".csr"));
}

}  // namespace

TEST_CASE("station CA: a CSR's key comes back only when its signature verifies") {
  test::TempDir dir;
  Bytes csr = make_csr(dir, "dev");
  CHECK(verify_csr(csr) == load_public_key_file(dir.file("dev.key"), std::nullopt));
  Bytes tampered = csr;
  tampered[tampered.size() - 5] ^= 0x01;  // inside the signature
  CHECK_THROWS_AS(verify_csr(tampered), Error);
  try {
    verify_csr(tampered);
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::verification_failed);
  }
}

TEST_CASE("station CA: openssl verify accepts the issued chain and sees the template") {
  test::TempDir dir;
  test::make_ca(dir, "ca.key.pem", "ca.pem");
  Bytes csr = make_csr(dir, "dev");
  auto ca = open_signer(dir.file("ca.key.pem"));
  auto issued = issue_device_certificate(*ca, read_certificate_file(dir.file("ca.pem")), verify_csr(csr), "0A1B2C3D",
                                         {"Thermostat", 365});
  write_file_atomic(dir.file("leaf.pem"), as_bytes(issued.pem));
  auto verified = test::run_process("/usr/bin/openssl", {"verify", "-CAfile", dir.file("ca.pem"), "-purpose", "sslclient",
                                                dir.file("leaf.pem")});
  CHECK_MESSAGE(verified.exit_code == 0, (verified.out + verified.err));
  auto text = test::run_process("/usr/bin/openssl", {"x509", "-in", dir.file("leaf.pem"), "-noout", "-text"});
  CHECK(text.out.find("CN = 0A1B2C3D") != std::string::npos);
  CHECK(text.out.find("O = Thermostat") != std::string::npos);
  CHECK(text.out.find("CA:FALSE") != std::string::npos);
  CHECK(text.out.find("Digital Signature") != std::string::npos);
  CHECK(text.out.find("TLS Web Client Authentication") != std::string::npos);
  CHECK(text.out.find("Subject Key Identifier") != std::string::npos);
  CHECK(text.out.find("Authority Key Identifier") != std::string::npos);
  CHECK(issued.serial_hex.size() == 32);
  CHECK(certificate_serial_hex(issued.der) == issued.serial_hex);

  // A second certificate gets another serial; another CA does not verify the leaf.
  auto second = issue_device_certificate(*ca, read_certificate_file(dir.file("ca.pem")), verify_csr(csr), "0A1B2C3D", {});
  CHECK(second.serial_hex != issued.serial_hex);
  test::make_ca(dir, "other.key.pem", "other.pem");
  auto rejected = test::run_process("/usr/bin/openssl", {"verify", "-CAfile", dir.file("other.pem"), dir.file("leaf.pem")});
  CHECK(rejected.exit_code != 0);
  CHECK(certificate_matches(issued.der, read_certificate_file(dir.file("ca.pem")), verify_csr(csr)));
  CHECK_FALSE(certificate_matches(issued.der, read_certificate_file(dir.file("other.pem")), verify_csr(csr)));
}

TEST_CASE("station CA: a CA key that does not match the CA certificate is refused") {
  test::TempDir dir;
  test::make_ca(dir, "ca.key.pem", "ca.pem");
  test::make_ca(dir, "other.key.pem", "other.pem");
  auto wrong = open_signer(dir.file("other.key.pem"));
  CHECK_THROWS_WITH_AS(issue_device_certificate(*wrong, read_certificate_file(dir.file("ca.pem")),
                                                verify_csr(make_csr(dir, "dev")), "X", {}),
                       doctest::Contains("does not belong"), Error);
}

TEST_CASE("station CA: attestation verifies against the vendor root and not against another") {
  test::ServedBoards served(1);
  SmpClient client(open_link(served.address(0)));
  Bytes nonce(32, 0x5a);
  auto identity = read_identity(client, nonce);
  Bytes root = certificate_der_from_pem(served.root.cert_pem());
  CHECK_NOTHROW(verify_attestation(identity, root, nonce));
  CHECK(attested_uid(identity.attestation_chain.front()) == identity.uid);

  test::TempDir other_dir;
  auto other = emu::load_or_create_vendor_root(other_dir.path());
  try {
    verify_attestation(identity, certificate_der_from_pem(other.cert_pem()), nonce);
    FAIL("a foreign vendor root was accepted");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::verification_failed);
    CHECK(std::string(e.what()).find(identity.uid) != std::string::npos);
  }

  auto forged = identity;
  forged.transport_key_signature.back() ^= 0x01;
  CHECK_THROWS_WITH_AS(verify_attestation(forged, root, nonce), doctest::Contains("transport key"), Error);
}

TEST_CASE("station CA: an attestation answer only verifies for the nonce, UID and key it was made for") {
  test::ServedBoards served(1);
  SmpClient client(open_link(served.address(0)));
  Bytes root = certificate_der_from_pem(served.root.cert_pem());
  Bytes nonce(32, 0x11), other_nonce(32, 0x22);
  auto identity = read_identity(client, nonce);
  // Replayed: the answer to one challenge does not answer another.
  CHECK_THROWS_WITH_AS(verify_attestation(identity, root, other_nonce), doctest::Contains("replayed"), Error);
  // No answer at all (an old board, or a proxy that strips it).
  auto unanswered = read_identity(client);
  CHECK(unanswered.attestation_signature.empty());
  CHECK_THROWS_WITH_AS(verify_attestation(unanswered, root, nonce), doctest::Contains("challenge"), Error);
  // Another UID than the certificate binds: refused before any signature is looked at.
  auto relabelled = identity;
  relabelled.uid = "0000000000000000";
  CHECK_THROWS_WITH_AS(verify_attestation(relabelled, root, nonce), doctest::Contains("does not bind"), Error);

  // The device key: the attestation key vouches for the key made in the secure element, for this nonce.
  auto key = generate_attested_device_key(client, identity.uid, nonce);
  Bytes public_key = verify_csr(key.csr);
  CHECK(public_key == key.public_key);
  CHECK_NOTHROW(verify_key_attestation(identity, nonce, public_key, key.key_attestation));
  CHECK_THROWS_AS(verify_key_attestation(identity, other_nonce, public_key, key.key_attestation), Error);
  Bytes outsider = verify_csr(make_csr(served.dir, "outsider"));
  CHECK_THROWS_WITH_AS(verify_key_attestation(identity, nonce, outsider, key.key_attestation),
                       doctest::Contains("does not vouch"), Error);
}

TEST_CASE("station CA: a certificate is never issued with a validity outside its range") {
  test::TempDir dir;
  test::make_ca(dir, "ca.key.pem", "ca.pem");
  auto ca = open_signer(dir.file("ca.key.pem"));
  Bytes ca_der = read_certificate_file(dir.file("ca.pem"));
  Bytes key = verify_csr(make_csr(dir, "dev"));
  for (int days : {0, -1, -36500, max_validity_days + 1, 2147483647}) {
    CAPTURE(days);
    CHECK_THROWS_WITH_AS(issue_device_certificate(*ca, ca_der, key, "dev", {"P", days}),
                         doctest::Contains("validity"), Error);
  }
  for (int days : {min_validity_days, max_validity_days}) {
    auto issued = issue_device_certificate(*ca, ca_der, key, "dev", {"P", days});
    const unsigned char* p = issued.der.data();
    X509* cert = d2i_X509(nullptr, &p, static_cast<long>(issued.der.size()));
    REQUIRE(cert);
    int day = 0, second = 0;
    REQUIRE(ASN1_TIME_diff(&day, &second, X509_get0_notBefore(cert), X509_get0_notAfter(cert)));
    CHECK(day == days);
    X509_free(cert);
  }
}
