// One spelling for output files across every noun: `-o, --out FILE` with `--force`, and the same
// refusal everywhere. Inside a command that writes a file, `-o` names the file; the global output
// format is spelled `--output` there. A file name that is also a format name (`-o json`) is refused
// as a usage error, so `kiln manifest sign m.suit -o json` cannot silently write a file named "json"
// (`-o ./json` still can).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include <CLI/CLI.hpp>

#include "core/bytes.hpp"

namespace kiln::cli {

class Context;

// Adds `-o,--out FILE` (with the format-name check) to `command`; `names` adds aliases (image
// download keeps wget's -O).
CLI::Option* add_output_file_option(CLI::App* command, std::string& path, const std::string& description,
                                    const std::string& names = "-o,--out");
// Adds `--force` ("Overwrite an existing FILE").
CLI::Option* add_force_flag(CLI::App* command, bool& force);
// The check behind `-o` (and imgtool's positional OUTFILE): the name must not be a format name.
CLI::Validator output_file_validator();

// Throws Error(conflict, exit 7) when `path` is an existing regular file and `force` is not set.
// Devices, FIFOs and "-" are written in place and never count as overwriting. Called before any
// work, so a refused run costs nothing (the write itself still goes through a temp file + rename).
void check_overwrite(const std::filesystem::path& path, bool force);

// For output that goes to `-o FILE` or, without one, to standard output. Before the work: check_overwrite for
// a file; for standard output, data in a binary format (`binary_format` names it, "der"; empty for text) is
// refused on a terminal (Error(usage): add -o FILE or redirect stdout).
void check_file_or_stdout(const Context& ctx, const std::string& path, bool force, std::string_view binary_format = {});
// Writes `data` to `path` (temp + rename for a regular file, mode 0644) or, when `path` is empty, to standard
// output. True when a file was written.
bool write_file_or_stdout(const Context& ctx, const std::string& path, ByteView data);

}  // namespace kiln::cli
