// kiln's main(): everything happens in cli::run.
#include "cli/app.hpp"

int main(int argc, char** argv) { return kiln::cli::run(argc, argv); }
