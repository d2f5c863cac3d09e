// Crafted P-256 keys an attacker would hand over: private scalar 0, n, n+1, mismatched halves, the
// point at infinity, a point off the curve; and the ECDSA signature anyone can make for infinity.
#pragma once

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>

#include <optional>
#include <string>

#include "core/bytes.hpp"

namespace kiln::test {

inline Bytes der_tlv(std::uint8_t tag, ByteView value) {
  Bytes out{tag};
  if (value.size() < 128) {
    out.push_back(static_cast<std::uint8_t>(value.size()));
  } else {
    out.push_back(0x81);
    out.push_back(static_cast<std::uint8_t>(value.size()));
  }
  out.insert(out.end(), value.begin(), value.end());
  return out;
}

inline Bytes concat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

inline const Bytes& p256_oid() {
  static const Bytes oid = from_hex("06082a8648ce3d030107");
  return oid;
}

inline std::string pem_of(const std::string& label, ByteView der) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio(bio, label.c_str(), "", der.data(), static_cast<long>(der.size()));
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<std::size_t>(len));
  BIO_free(bio);
  return out;
}

// The Ed25519 private key of RFC 8032 section 7.1 test 2 as a PKCS#8 PEM: its signature over the one byte 0x72
// is the RFC's (rfc8032_test2_signature_hex), so a test can pin exact signatures.
inline std::string rfc8032_test2_pem() {
  return pem_of("PRIVATE KEY", from_hex("302e020100300506032b657004220420"
                                        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"));
}
constexpr const char* rfc8032_test2_public_hex = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
constexpr const char* rfc8032_test2_signature_hex =  // over the message 0x72
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00";

// SubjectPublicKeyInfo for a P-256 point as encoded ("00" is the point at infinity).
inline Bytes p256_spki(ByteView point) {
  Bytes algorithm = der_tlv(0x30, concat({from_hex("06072a8648ce3d0201"), p256_oid()}));
  Bytes bits{0x00};
  bits.insert(bits.end(), point.begin(), point.end());
  return der_tlv(0x30, concat({algorithm, der_tlv(0x03, bits)}));
}
inline Bytes infinity_spki() { return p256_spki(Bytes{0x00}); }
inline Bytes off_curve_spki() {  // (1, 1) is not on P-256
  Bytes point(65, 0);
  point[0] = 0x04;
  point[32] = 1;
  point[64] = 1;
  return p256_spki(point);
}

// An "EC PRIVATE KEY" (SEC1) PEM with `scalar` (32 bytes) and, if given, that public point.
inline std::string sec1_pem(ByteView scalar, const std::optional<Bytes>& point) {
  Bytes body = concat({der_tlv(0x02, Bytes{0x01}), der_tlv(0x04, scalar), der_tlv(0xa0, p256_oid())});
  if (point) {
    Bytes bits{0x00};
    bits.insert(bits.end(), point->begin(), point->end());
    body = concat({body, der_tlv(0xa1, der_tlv(0x03, bits))});
  }
  return pem_of("EC PRIVATE KEY", der_tlv(0x30, body));
}

inline Bytes p256_order_plus(unsigned add) {
  Bytes n = from_hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
  unsigned carry = add;
  for (std::size_t i = n.size(); i-- > 0 && carry;) {
    unsigned v = n[i] + carry;
    n[i] = static_cast<std::uint8_t>(v);
    carry = v >> 8;
  }
  return n;
}

// The private scalar of `private_pem` with the public point of `other_pem`: halves that do not match.
inline std::string mismatched_pem(const std::string& private_pem, const std::string& other_pem) {
  auto read = [](const std::string& pem) {
    BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    return key;
  };
  EVP_PKEY* a = read(private_pem);
  EVP_PKEY* b = read(other_pem);
  BIGNUM* d = nullptr;
  EVP_PKEY_get_bn_param(a, "priv", &d);
  Bytes scalar(32);
  BN_bn2binpad(d, scalar.data(), 32);
  Bytes point(65);
  size_t len = 0;
  EVP_PKEY_get_octet_string_param(b, "pub", point.data(), point.size(), &len);
  point.resize(len);
  BN_clear_free(d);
  EVP_PKEY_free(a);
  EVP_PKEY_free(b);
  return sec1_pem(scalar, point);
}

// With Q the point at infinity, ECDSA verification computes R = u1*G + u2*Q = (e/s)*G: choosing
// s = e makes R = G, so (r = x(G) mod n, s = e mod n) "verifies" for any digest. DER ECDSA-Sig-Value.
inline Bytes forge_ecdsa_for_infinity(ByteView sha256_digest) {
  BIGNUM* n = BN_new();
  BN_bin2bn(p256_order_plus(0).data(), 32, n);
  BIGNUM* r = BN_new();
  BN_hex2bn(&r, "6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296");
  BIGNUM* e = BN_bin2bn(sha256_digest.data(), static_cast<int>(sha256_digest.size()), nullptr);
  BN_CTX* ctx = BN_CTX_new();
  BIGNUM* s = BN_new();
  BN_nnmod(s, e, n, ctx);
  BN_nnmod(r, r, n, ctx);
  ECDSA_SIG* sig = ECDSA_SIG_new();
  ECDSA_SIG_set0(sig, r, s);
  int len = i2d_ECDSA_SIG(sig, nullptr);
  Bytes out(static_cast<std::size_t>(len));
  unsigned char* p = out.data();
  i2d_ECDSA_SIG(sig, &p);
  ECDSA_SIG_free(sig);
  BN_free(e);
  BN_free(n);
  BN_CTX_free(ctx);
  return out;
}

}  // namespace kiln::test
