// HKDF (RFC 5869) over OpenSSL: the one key-derivation helper for image encryption and key wrapping.
#pragma once

#include <openssl/evp.h>

#include <cstddef>

#include "core/bytes.hpp"

namespace kiln {

// HKDF-Extract-and-Expand with `digest` and no salt (RFC 5869: a string of HashLen zeros), as MCUboot's ECIES
// and kiln's key wrap specify: `length` bytes. Throws Error(failure) when OpenSSL cannot derive them.
Bytes hkdf(const EVP_MD* digest, ByteView secret, ByteView info, std::size_t length);

}  // namespace kiln
