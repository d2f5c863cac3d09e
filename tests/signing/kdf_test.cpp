// Tests for signing/kdf: HKDF without salt, against RFC 5869 and an independent HMAC implementation.
#include <doctest/doctest.h>

#include <openssl/evp.h>

#include <string>

#include "core/bytes.hpp"
#include "signing/kdf.hpp"

using namespace kiln;

namespace {

Bytes counting(std::size_t n) {
  Bytes out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>(i);
  return out;
}

}  // namespace

TEST_CASE("hkdf: RFC 5869 test case 3 (SHA-256, no salt, no info)") {
  Bytes ikm(22, 0x0b);
  CHECK(to_hex(hkdf(EVP_sha256(), ikm, {}, 42)) ==
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8");
}

// Expected values from Python's hmac module: PRK = HMAC(zeros(HashLen), IKM), then T(1) | T(2) | ….
TEST_CASE("hkdf: the info string and the digest change the output (MCUboot's ECIES info, SHA-256 and SHA-512)") {
  std::string info = "MCUBoot_ECIES_v1";
  CHECK(to_hex(hkdf(EVP_sha256(), counting(32), as_bytes(info), 48)) ==
        "e3e6acef57031db73f8aed437a88b9dc1e107f81109caf17ed08558366c7c33e28dadf9cccd9951b952e10014dc5ccd3");
  CHECK(to_hex(hkdf(EVP_sha512(), counting(32), as_bytes(info), 48)) ==
        "067f45b9aeed9eadbf5e5a00840888a010747f851bb211aa65bd203d154a225a8c3d32ecfe600687375478d6e255956e");
}
