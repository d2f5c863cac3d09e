// kiln-service(8): the man page, from the program's own command tree plus what --help cannot say.
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace kiln::service {

// The roff text of kiln-service(8) (kiln-service --man-page; scripts/generate.sh writes man/kiln-service.8).
std::string manual_page(const CLI::App& app);

}  // namespace kiln::service
