// kiln-board-emu(1): the man page, from the program's own options plus what --help cannot say.
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace kiln::emu {

// The roff text of kiln-board-emu(1) (kiln-board-emu --man-page; scripts/generate.sh writes man/).
std::string manual_page(const CLI::App& app);

}  // namespace kiln::emu
