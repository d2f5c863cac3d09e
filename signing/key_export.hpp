// Public keys written out for other tools: PEM, DER, raw key bytes, and imgtool's C / Rust arrays.
#pragma once

#include <string_view>

#include <openssl/types.h>

#include "core/bytes.hpp"

namespace kiln {

enum class PublicKeyFormat { pem, der, c, rust, raw };

// "pem", "der", "c", "rust", "raw"; throws Error(usage) for anything else.
PublicKeyFormat parse_public_key_format(std::string_view name);
// Binary formats (der, raw) must not be written to a terminal.
bool is_binary_format(PublicKeyFormat format);

// A key's public half as DER SubjectPublicKeyInfo (as `openssl pkey -pubout -outform DER`); throws
// Error(failure) for a null key or one OpenSSL cannot encode.
Bytes spki_der(EVP_PKEY* key);

// The key in `format`, from a DER SubjectPublicKeyInfo:
//   pem   as `openssl pkey -pubout`;  der  the SPKI itself;
//   c     / rust: the MCUboot key bytes as imgtool `getpub -e lang-c` / `lang-rust` prints them;
//   raw   the bare key: uncompressed EC point, 32-byte Ed25519 key, or DER PKCS#1 RSAPublicKey.
Bytes export_public_key(ByteView spki_der, PublicKeyFormat format);

}  // namespace kiln
