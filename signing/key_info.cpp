// Key fingerprints and the MCUboot key encoding.
#include "signing/key_info.hpp"

#include <openssl/core_names.h>
#include <openssl/encoder.h>

#include "core/error.hpp"
#include "signing/openssl_ptr.hpp"

namespace kiln {

Bytes mcuboot_public_key_bytes(ByteView spki_der) {
  if (!is_rsa(public_key_type(spki_der))) return Bytes(spki_der.begin(), spki_der.end());
  auto key = decode_public_key(spki_der);
  unsigned char* out = nullptr;
  size_t len = 0;
  OSSL_ENCODER_CTX* ctx =
      OSSL_ENCODER_CTX_new_for_pkey(key.get(), EVP_PKEY_PUBLIC_KEY, "DER", "type-specific", nullptr);
  bool ok = ctx && OSSL_ENCODER_to_data(ctx, &out, &len) == 1;
  OSSL_ENCODER_CTX_free(ctx);
  if (!ok) throw Error(ExitCode::failure, "cannot encode the RSA public key").with_detail(openssl_errors());
  Bytes result(out, out + len);
  OPENSSL_free(out);
  return result;
}

KeyInfo describe_public_key(ByteView spki_der) {
  KeyInfo info;
  info.type = public_key_type(spki_der);
  auto key = decode_public_key(spki_der);
  info.bits = EVP_PKEY_get_bits(key.get());
  info.fingerprint = to_hex(digest(HashAlg::sha256, spki_der));
  info.mcuboot_key_hash = to_hex(digest(HashAlg::sha256, mcuboot_public_key_bytes(spki_der)));
  return info;
}

}  // namespace kiln
