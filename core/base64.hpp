// Base64 (RFC 4648, with padding), over OpenSSL's encoder: the one home for it (imgtool's signature files,
// key sign-digest --base64, the serial console's frames).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "core/bytes.hpp"

namespace kiln {

std::string to_base64(ByteView data);
// Strict: a multiple of 4 characters from the base64 alphabet, '=' only as padding; nullopt otherwise.
// Callers that accept whitespace (as Python's b64decode does) remove it first.
std::optional<Bytes> from_base64(std::string_view text);

}  // namespace kiln
