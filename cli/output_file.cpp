#include "cli/output_file.hpp"

#include <fmt/format.h>

#include <array>
#include <string_view>

#include "cli/context.hpp"
#include "core/error.hpp"
#include "core/files.hpp"

namespace kiln::cli {

CLI::Validator output_file_validator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        static constexpr std::array<std::string_view, 5> formats{"table", "json", "jsonl", "yaml", "csv"};
        for (auto format : formats)
          if (value == format)
            return fmt::format(
                "'{0}' is an output format, but here -o names the file to write; use --output {0} for the format, "
                "or -o ./{0} for a file named {0}",
                value);
        return {};
      },
      "FILE", "output file");
}

CLI::Option* add_output_file_option(CLI::App* command, std::string& path, const std::string& description,
                                    const std::string& names) {
  return command->add_option(names, path, description)->type_name("FILE")->check(output_file_validator());
}

CLI::Option* add_force_flag(CLI::App* command, bool& force) {
  return command->add_flag("--force", force, "Overwrite an existing output file");
}

void check_overwrite(const std::filesystem::path& path, bool force) {
  if (force || path.empty() || writes_in_place(path)) return;
  std::error_code ec;
  if (std::filesystem::exists(path, ec))
    throw Error(ExitCode::conflict, fmt::format("{} already exists", path.string()),
                "pass --force to overwrite it, or choose another path");
}

void check_file_or_stdout(const Context& ctx, const std::string& path, bool force, std::string_view binary_format) {
  if (path.empty() && !binary_format.empty() && ctx.stdout_is_terminal())
    throw Error(ExitCode::usage, fmt::format("refusing to write binary {} to a terminal", binary_format),
                "add -o FILE or redirect stdout");
  check_overwrite(path, force);
}

bool write_file_or_stdout(const Context& ctx, const std::string& path, ByteView data) {
  if (path.empty()) {
    ctx.write_output(std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
    return false;
  }
  write_file_atomic(path, data, 0644);
  return true;
}

}  // namespace kiln::cli
