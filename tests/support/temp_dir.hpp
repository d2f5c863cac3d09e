// A temporary directory removed (recursively) when the test ends.
#pragma once

#include <filesystem>
#include <functional>
#include <fstream>
#include <sstream>
#include <string>

namespace kiln::test {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// The whole content of a file, as bytes in a string ("" when it cannot be read).
inline std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Opens the FIFO for reading before `writer` runs (so a writer that opens it never blocks), then
// returns what arrives until the writer is done. A writer that renames a file over the FIFO
// instead finishes without sending anything: the result is empty, never a hang.
std::string read_fifo_while(const std::filesystem::path& fifo, const std::function<void()>& writer);

}  // namespace kiln::test
