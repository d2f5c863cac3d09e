// kiln-service's config file (TOML, e.g. /etc/kiln-service/config.toml): read and checked in full at start.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>

namespace kiln::service {

enum class ConfigType { string, integer, number };  // number: an integer or a float

// One key the file may hold (the name of the matching `kiln-service run` flag without its dashes).
struct ConfigKey {
  std::string name;
  ConfigType type;
};

struct ConfigValue {
  std::string text;  // the value as a command-line argument would spell it
  int line = 0;      // where the key is, for messages that name it
};

// Reads a flat TOML file of known keys. Anything else stops here with exit 2 and a message naming the
// file, the line and the key: a syntax error, an unknown key, a table, or a value of the wrong type.
std::map<std::string, ConfigValue> read_config_file(const std::filesystem::path& file, std::span<const ConfigKey> keys);

}  // namespace kiln::service
