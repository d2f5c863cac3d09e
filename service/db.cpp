// The service's database settings over core/sqlite.
#include "service/db.hpp"

namespace kiln::service {

// The database holds token hashes, device keys and claim state: only the service's user may read it.
Db::Db(const std::string& path)
    : sqlite::Db(path, {.label = "database", .busy_timeout_ms = busy_timeout_ms, .busy_code = ExitCode::service,
                        .owner_only = true}) {
  exec("PRAGMA synchronous=NORMAL");
  exec("PRAGMA foreign_keys=ON");
  exec("PRAGMA secure_delete=ON");  // deleted challenges and replaced keys do not linger in free pages
}

}  // namespace kiln::service
