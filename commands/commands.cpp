// The table of nouns: adding a command touches its own file and one line here.
#include "commands/commands.hpp"

namespace kiln::commands {

namespace {
constexpr Noun nouns[] = {
    {"key", add_key},
    {"image", add_image},
    {"manifest", add_manifest},
    {"cert", add_cert},
    {"board", add_board},
    {"factory", add_factory},
    {"completion", add_completion},
    {"help", add_help},
    {"version", add_version},
    {"login", add_login},
    {"product", add_product},
    {"trust", add_trust},
    {"group", add_group},
    {"device", add_device},
    {"deployment", add_deployment},
    {"token", add_token},
    {"audit", add_audit},
};
}  // namespace

std::span<const Noun> all_commands() { return nouns; }

}  // namespace kiln::commands
