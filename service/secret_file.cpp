#include "service/secret_file.hpp"

#include <fmt/format.h>
#include <fmt/std.h>

#include "core/error.hpp"
#include "core/files.hpp"

namespace kiln::service {

Bytes load_or_create_secret(const std::filesystem::path& path, std::string_view what, const std::function<Bytes()>& create) {
  namespace fs = std::filesystem;
  if (!fs::exists(path)) {
    try {
      write_file_atomic(path, create(), 0600, AtomicFile::Overwrite::refuse);
    } catch (const Error&) {
      if (!fs::exists(path)) throw;  // another instance created it first: use theirs
    }
  }
  if ((fs::status(path).permissions() & (fs::perms::group_all | fs::perms::others_all)) != fs::perms::none)
    throw Error(ExitCode::authentication, fmt::format("{} {} is readable by others", what, path.string()),
                fmt::format("chmod 600 {}", path.string()));
  return read_file(path);
}

}  // namespace kiln::service
