// HKDF (RFC 5869) over OpenSSL: the one key-derivation helper for image encryption, key wrapping and the
// service's session-ticket keys.
#pragma once

#include <openssl/evp.h>

#include <cstddef>

#include "core/bytes.hpp"

namespace kiln {

// HKDF-Extract-and-Expand with `digest` (no salt unless given): `length` bytes. Throws Error(failure) when
// OpenSSL cannot derive them.
Bytes hkdf(const EVP_MD* digest, ByteView secret, ByteView info, std::size_t length, ByteView salt = {});

}  // namespace kiln
