// The kiln command line: builds the command tree, applies config and environment, runs, maps errors.
#pragma once

#include <memory>

namespace CLI {
class App;
}

namespace kiln::cli {

class Context;

// Builds the whole command tree (global options plus every noun's verbs) bound to `ctx`.
std::unique_ptr<CLI::App> build_app(Context& ctx);

// Runs kiln with argv; returns the process exit code. Never throws.
int run(int argc, char** argv);

}  // namespace kiln::cli
