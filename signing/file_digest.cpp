#include "signing/file_digest.hpp"

#include "core/files.hpp"

namespace kiln {

Bytes file_digest(HashAlg hash, const std::filesystem::path& path) {
  Hasher hasher(hash);
  ChunkReader reader(path);
  for (auto chunk = reader.next(); !chunk.empty(); chunk = reader.next()) hasher.update(chunk);
  return hasher.finish();
}

}  // namespace kiln
