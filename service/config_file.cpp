// Reads kiln-service's TOML config with toml++, which knows each key's line and each value's type.
#include "service/config_file.hpp"

#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "core/error.hpp"

namespace kiln::service {
namespace {

const char* type_name(ConfigType type) {
  switch (type) {
    case ConfigType::string: return "a string";
    case ConfigType::integer: return "an integer";
    case ConfigType::number: return "a number";
  }
  return "a value";
}

const char* toml_type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    default: return "a date or time";
  }
}

std::string known_names(std::span<const ConfigKey> keys) {
  std::string out;
  for (const auto& key : keys) out += (out.empty() ? "" : ", ") + key.name;
  return out;
}

}  // namespace

std::map<std::string, ConfigValue> read_config_file(const std::filesystem::path& file, std::span<const ConfigKey> keys) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(ExitCode::usage, fmt::format("cannot read config file {}", file.string()), "fix --config");
  std::ostringstream text;
  text << in.rdbuf();
  toml::table table;
  try {
    table = toml::parse(text.str(), file.string());
  } catch (const toml::parse_error& e) {
    throw Error(ExitCode::usage, fmt::format("{}:{}: not valid TOML: {}", file.string(), e.source().begin.line,
                                             std::string(e.description())));
  }
  std::map<std::string, ConfigValue> values;
  for (auto&& [name, node] : table) {
    int line = static_cast<int>(name.source().begin.line);
    std::string key(name.str());
    const ConfigKey* known = nullptr;
    for (const auto& k : keys)
      if (k.name == key) known = &k;
    if (!known)
      throw Error(ExitCode::usage, fmt::format("{}:{}: unknown key '{}'", file.string(), line, key),
                  "known keys: " + known_names(keys));
    ConfigValue value{.text = {}, .line = line};
    if (known->type == ConfigType::string && node.is_string()) value.text = *node.value<std::string>();
    else if (known->type != ConfigType::string && node.is_integer()) value.text = std::to_string(*node.value<std::int64_t>());
    else if (known->type == ConfigType::number && node.is_floating_point())
      value.text = fmt::format("{}", *node.value<double>());
    else
      throw Error(ExitCode::usage,
                  fmt::format("{}:{}: '{}' must be {}, not {}", file.string(), line, key, type_name(known->type),
                              toml_type_name(node)));
    values.emplace(key, std::move(value));
  }
  return values;
}

}  // namespace kiln::service
