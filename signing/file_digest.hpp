// The digest of a whole file, read in chunks (constant memory): the one home for "SHA-256 of this file".
#pragma once

#include <filesystem>

#include "signing/signer.hpp"

namespace kiln {

// Throws Error(not_found/failure) naming the file when it cannot be read.
Bytes file_digest(HashAlg hash, const std::filesystem::path& path);

}  // namespace kiln
