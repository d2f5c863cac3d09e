// UUIDv5 over OpenSSL's SHA-1.
#include "signing/uuid.hpp"

#include <openssl/evp.h>

#include "core/error.hpp"

namespace kiln {

Bytes uuid5(ByteView name_space, std::string_view name) {
  Bytes input(name_space.begin(), name_space.end());
  input.insert(input.end(), name.begin(), name.end());
  Bytes sha1(EVP_MAX_MD_SIZE);
  unsigned length = 0;
  if (EVP_Digest(input.data(), input.size(), sha1.data(), &length, EVP_sha1(), nullptr) != 1)
    throw Error(ExitCode::failure, "cannot compute SHA-1 for a name-based UUID").with_detail(openssl_errors());
  sha1.resize(16);
  sha1[6] = static_cast<std::uint8_t>((sha1[6] & 0x0f) | 0x50);  // version 5
  sha1[8] = static_cast<std::uint8_t>((sha1[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return sha1;
}

}  // namespace kiln
