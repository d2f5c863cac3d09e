// Test helpers for manifests tests: the draft's vectors and throwaway signing keys.
#pragma once

#include <memory>
#include <string>

#include "core/bytes.hpp"
#include "core/files.hpp"
#include "signing/file_key.hpp"
#include "tests/support/process.hpp"
#include "tests/support/vectors.hpp"
#include "tests/support/temp_dir.hpp"

namespace kiln::test {

inline std::string suit_vector(const std::string& name) {
  return vector("suit/" + name);
}
inline Bytes read_suit_vector(const std::string& name) {
  return read_file(suit_vector(name));
}

// A fresh private key file of `type` in `dir`, opened as a Signer.
inline std::unique_ptr<Signer> make_signer(const TempDir& dir, KeyType type, const std::string& name) {
  std::string path = dir.file(name);
  write_file_atomic(path, as_bytes(generate_private_key_pem(type, std::nullopt)), 0600);
  return load_file_signer(path, std::nullopt);
}

}  // namespace kiln::test
