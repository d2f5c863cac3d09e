// Station profile: TOML written by hand (flat, quoted strings) and read with CLI11's TOML reader.
#include "provisioning/profile.hpp"

#include <map>
#include <sstream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/signer.hpp"

namespace kiln {

namespace fs = std::filesystem;

namespace {

// Profile values are plain: no quotes, backslashes or control characters, so every value reads
// back exactly (CLI11's TOML reader does not undo every TOML escape).
bool plain_value(const std::string& value) {
  for (char c : value)
    if (c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
  return true;
}

std::string quoted(const std::string& value) {
  if (!plain_value(value))
    throw Error(ExitCode::usage, fmt::format("profile values cannot contain quotes, backslashes or control characters: {}",
                                             nlohmann::json(value).dump()));
  return "\"" + value + "\"";
}

const std::map<std::string, std::string> known_keys = {
    {"station.product", ""}, {"station.id", ""}, {"station.ledger", ""}, {"station.quota", ""},
    {"station.checkpoint_every", ""}, {"station.key", ""}, {"ca.key", ""}, {"ca.certificate", ""},
    {"ca.validity_days", ""}, {"attestation.vendor_root", ""}, {"identity.mode", ""},
    {"install.boot_key_hash", ""}, {"install.service_url", ""}, {"install.trust_anchor", ""},
    {"install.final_state", ""}, {"firmware.image", ""}, {"firmware.manifest", ""},
    {"firmware.manifest_key", ""}, {"firmware.manifest_keys", ""}, {"firmware.manifest_threshold", ""},
    {"firmware.image_sha256", ""}, {"firmware.manifest_sha256", ""},
    {"encryption.mode", ""}, {"encryption.type", ""}, {"encryption.key", ""}};

std::int64_t to_integer(const std::string& key, const std::string& value, ProfileRange range) {
  try {
    std::size_t used = 0;
    auto n = std::stoll(value, &used);
    if (used == value.size() && n >= range.min && n <= range.max) return n;
  } catch (const std::exception&) {
  }
  throw Error(ExitCode::usage,
              fmt::format("profile: {} must be an integer from {} to {}, not '{}'", key, range.min, range.max, value));
}

std::string trimmed(std::string_view text) {
  auto first = text.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  auto last = text.find_last_not_of(" \t\r");
  return std::string(text.substr(first, last - first + 1));
}

// A dotted key with the blanks around its parts removed ("a . b" and "a.b" are the same key).
std::string normalized_key(std::string_view key) {
  std::string out;
  std::size_t start = 0;
  while (true) {
    auto dot = key.find('.', start);
    if (!out.empty()) out += '.';
    out += trimmed(key.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start));
    if (dot == std::string_view::npos) return out;
    start = dot + 1;
  }
}

// CLI11's TOML reader merges a repeated table and lets a repeated key silently win, so a profile
// edited by hand could say two things at once. Refuse both, naming the lines.
void refuse_duplicates(const std::string& toml) {
  std::map<std::string, std::size_t> tables, keys;
  std::string table;
  std::istringstream in(toml);
  std::size_t number = 0;
  for (std::string raw; std::getline(in, raw);) {
    ++number;
    std::string line = trimmed(raw);
    if (line.empty() || line.front() == '#') continue;
    if (line.rfind("[[", 0) == 0)
      throw Error(ExitCode::usage, fmt::format("profile line {}: arrays of tables ({}) are not part of a station profile",
                                               number, line));
    if (line.front() == '[') {
      auto close = line.find(']');
      if (close == std::string::npos) continue;  // the TOML reader names the error
      table = normalized_key(std::string_view(line).substr(1, close - 1));
      auto [it, added] = tables.emplace(table, number);
      if (!added)
        throw Error(ExitCode::usage,
                    fmt::format("profile line {}: table [{}] appears twice (first on line {})", number, table, it->second),
                    "merge the two tables into one");
      continue;
    }
    auto equals = line.find('=');
    if (equals == std::string::npos) continue;
    std::string key = normalized_key(std::string_view(line).substr(0, equals));
    std::string full = table.empty() ? key : table + "." + key;
    auto [it, added] = keys.emplace(full, number);
    if (!added)
      throw Error(ExitCode::usage,
                  fmt::format("profile line {}: '{}' is set twice (first on line {})", number, full, it->second),
                  "keep one value for each key");
  }
}

}  // namespace

std::string_view identity_mode_name(IdentityMode mode) { return mode == IdentityMode::csr ? "csr" : "inject"; }

std::string profile_to_toml(const StationProfile& p) {
  std::ostringstream out;
  out << "# kiln station profile: what this station does to every board (kiln factory provision / run)\n\n";
  out << "[station]\n";
  out << "product = " << quoted(p.product) << "\n";
  out << "id = " << quoted(p.station_id) << "\n";
  out << "ledger = " << quoted(p.ledger.string()) << "\n";
  if (p.quota) out << "quota = " << *p.quota << "\n";
  out << "checkpoint_every = " << p.checkpoint_every << "\n";
  out << "key = " << quoted(p.station_key) << "\n\n";
  out << "[ca]\n";
  out << "key = " << quoted(p.ca_key) << "\n";
  out << "certificate = " << quoted(p.ca_certificate.string()) << "\n";
  out << "validity_days = " << p.validity_days << "\n\n";
  out << "[attestation]\n";
  out << "vendor_root = " << quoted(p.vendor_root.string()) << "\n\n";
  out << "[identity]\n";
  out << "mode = " << quoted(std::string(identity_mode_name(p.identity))) << "\n\n";
  out << "[install]\n";
  out << "boot_key_hash = " << quoted(p.boot_key_hash) << "\n";
  if (p.service_url) out << "service_url = " << quoted(*p.service_url) << "\n";
  out << "trust_anchor = " << quoted(p.trust_anchor.string()) << "\n";
  out << "final_state = " << quoted(std::string(manufacturing_state_name(p.final_state))) << "\n";
  if (p.firmware) {
    out << "\n[firmware]\n";
    out << "image = " << quoted(p.firmware->image.string()) << "\n";
    out << "image_sha256 = " << quoted(p.firmware->image_sha256) << "\n";
    out << "manifest = " << quoted(p.firmware->manifest.string()) << "\n";
    out << "manifest_sha256 = " << quoted(p.firmware->manifest_sha256) << "\n";
    std::string keys;
    for (const auto& key : p.firmware->manifest_keys) keys += (keys.empty() ? "" : ", ") + quoted(key);
    out << "manifest_keys = [" << keys << "]\n";
    out << "manifest_threshold = " << p.firmware->manifest_threshold << "\n";
  }
  if (p.encryption) {
    out << "\n[encryption]\n";
    if (p.encryption->mode == EncryptionKeyMode::generate) {
      out << "mode = \"generate\"\n";
      out << "type = " << quoted(p.encryption->type) << "\n";
    } else {
      out << "mode = \"install\"\n";
      out << "key = " << quoted(p.encryption->key.string()) << "\n";
    }
  }
  return out.str();
}

void write_profile(const fs::path& path, const StationProfile& profile, bool overwrite) {
  write_file_atomic(path, as_bytes(profile_to_toml(profile)), 0644,
                    overwrite ? AtomicFile::Overwrite::allow : AtomicFile::Overwrite::refuse);
}

StationProfile parse_profile(const std::string& toml, const fs::path& base_dir) {
  std::istringstream in(toml);
  std::vector<CLI::ConfigItem> items;
  try {
    items = CLI::ConfigTOML().from_config(in);
  } catch (const CLI::Error& e) {
    throw Error(ExitCode::usage, fmt::format("profile is not valid TOML: {}", e.what()));
  }
  refuse_duplicates(toml);
  std::map<std::string, std::string> values;
  std::vector<std::string> manifest_keys;
  for (const auto& item : items) {
    if (item.inputs.empty()) continue;  // section headers
    std::string key = item.fullname();
    if (!known_keys.count(key)) throw Error(ExitCode::usage, fmt::format("profile: unknown key '{}'", key));
    if (key == "firmware.manifest_keys") {  // the one list: M-of-N manifest keys
      for (const auto& input : item.inputs)
        if (!plain_value(input)) throw Error(ExitCode::usage, "profile: 'firmware.manifest_keys' must be hex strings");
      manifest_keys = item.inputs;
      values[key] = "list";
      continue;
    }
    if (item.inputs.size() != 1 || !plain_value(item.inputs.front()))
      throw Error(ExitCode::usage, fmt::format("profile: '{}' must be one plain string or number", key));
    values[key] = item.inputs.front();
  }
  auto required = [&](const std::string& key) {
    auto it = values.find(key);
    if (it == values.end() || it->second.empty())
      throw Error(ExitCode::usage, fmt::format("profile: '{}' is missing", key), "kiln factory init writes a complete profile");
    return it->second;
  };
  auto optional = [&](const std::string& key) -> std::optional<std::string> {
    auto it = values.find(key);
    if (it == values.end() || it->second.empty()) return std::nullopt;
    return it->second;
  };
  auto path_of = [&](const std::string& value) { return fs::path(value).is_absolute() ? fs::path(value) : base_dir / value; };
  auto keyref_of = [&](const std::string& value) { return value.rfind("pkcs11:", 0) == 0 ? value : path_of(value).string(); };

  StationProfile p;
  p.product = required("station.product");
  p.station_id = optional("station.id").value_or("station");
  p.ledger = path_of(optional("station.ledger").value_or("station-ledger.sqlite"));
  if (auto quota = optional("station.quota")) p.quota = to_integer("station.quota", *quota, profile_range::quota);
  if (auto every = optional("station.checkpoint_every"))
    p.checkpoint_every =
        static_cast<int>(to_integer("station.checkpoint_every", *every, profile_range::checkpoint_every));
  p.ca_key = keyref_of(required("ca.key"));
  p.station_key = optional("station.key") ? keyref_of(*optional("station.key")) : p.ca_key;
  p.ca_certificate = path_of(required("ca.certificate"));
  if (auto days = optional("ca.validity_days"))
    p.validity_days = static_cast<int>(to_integer("ca.validity_days", *days, profile_range::validity_days));
  p.vendor_root = path_of(required("attestation.vendor_root"));
  auto mode = optional("identity.mode").value_or("csr");
  if (mode == "csr") p.identity = IdentityMode::csr;
  else if (mode == "inject") p.identity = IdentityMode::inject;
  else throw Error(ExitCode::usage, fmt::format("profile: identity.mode must be csr or inject, not '{}'", mode));
  p.boot_key_hash = required("install.boot_key_hash");
  if (p.boot_key_hash.size() != 64 || from_hex(p.boot_key_hash).size() != 32)
    throw Error(ExitCode::usage, "profile: install.boot_key_hash must be 64 hex digits (SHA-256)");
  p.service_url = optional("install.service_url");
  if (p.service_url && p.service_url->rfind("https://", 0) != 0)
    throw Error(ExitCode::usage, fmt::format("profile: install.service_url must start with https://, not '{}'", *p.service_url));
  p.trust_anchor = path_of(optional("install.trust_anchor").value_or(p.ca_certificate.string()));
  p.final_state = parse_manufacturing_state(optional("install.final_state").value_or(
      p.service_url ? "device-complete" : "module-complete"));
  if (p.final_state == ManufacturingState::blank)
    throw Error(ExitCode::usage, "profile: install.final_state must be module-complete or device-complete");
  if (p.final_state == ManufacturingState::device_complete && !p.service_url)
    throw Error(ExitCode::usage, "profile: final_state device-complete needs install.service_url (the board requires it)");
  if (auto image = optional("firmware.image")) {
    FirmwareProfile fw;
    fw.image = path_of(*image);
    fw.manifest = path_of(required("firmware.manifest"));
    auto hex_of = [&](const std::string& key, std::size_t min_bytes, std::size_t max_bytes) {
      auto value = required(key);
      Bytes bytes;
      try {
        bytes = from_hex(value);
      } catch (const std::exception&) {
      }
      if (bytes.size() < min_bytes || bytes.size() > max_bytes || value.size() != 2 * bytes.size())
        throw Error(ExitCode::usage, fmt::format("profile: {} must be hex ({} to {} bytes)", key, min_bytes, max_bytes));
      return value;
    };
    fw.image_sha256 = hex_of("firmware.image_sha256", 32, 32);
    fw.manifest_sha256 = hex_of("firmware.manifest_sha256", 32, 32);
    // The manifest keys: `manifest_keys` and `manifest_threshold` (M of N), or one `manifest_key` (1 of 1, a
    // profile from before M of N).
    if (optional("firmware.manifest_key") && optional("firmware.manifest_keys"))
      throw Error(ExitCode::usage, "profile: firmware.manifest_key and firmware.manifest_keys cannot both be set");
    if (optional("firmware.manifest_key")) {
      fw.manifest_keys = {hex_of("firmware.manifest_key", 32, 1024)};
      if (optional("firmware.manifest_threshold"))
        throw Error(ExitCode::usage, "profile: firmware.manifest_threshold goes with firmware.manifest_keys");
    } else {
      required("firmware.manifest_keys");
      for (const auto& key : manifest_keys) {
        values["firmware.manifest_keys"] = key;
        fw.manifest_keys.push_back(hex_of("firmware.manifest_keys", 32, 1024));
      }
      fw.manifest_threshold = static_cast<std::uint64_t>(
          to_integer("firmware.manifest_threshold", required("firmware.manifest_threshold"),
                     {1, static_cast<std::int64_t>(fw.manifest_keys.size())}));
      for (std::size_t i = 0; i < fw.manifest_keys.size(); ++i)
        for (std::size_t j = 0; j < i; ++j)
          if (fw.manifest_keys[i] == fw.manifest_keys[j])
            throw Error(ExitCode::usage, "profile: firmware.manifest_keys lists a key twice");
    }
    p.firmware = fw;
  } else {
    for (const char* key : {"firmware.manifest", "firmware.manifest_key", "firmware.manifest_keys",
                            "firmware.manifest_threshold", "firmware.image_sha256", "firmware.manifest_sha256"})
      if (optional(key)) throw Error(ExitCode::usage, fmt::format("profile: '{}' needs firmware.image", key));
  }
  if (auto enc_mode = optional("encryption.mode")) {
    EncryptionProfile e;
    if (*enc_mode == "generate") {
      e.mode = EncryptionKeyMode::generate;
      e.type = optional("encryption.type").value_or("ecies-p256");
      if (e.type != "ecies-p256" && e.type != "ecies-x25519" && e.type != "rsa-oaep-2048")
        throw Error(ExitCode::usage, fmt::format("profile: encryption.type must be ecies-p256, ecies-x25519 or "
                                                 "rsa-oaep-2048, not '{}'", e.type));
      if (optional("encryption.key")) throw Error(ExitCode::usage, "profile: encryption.key needs mode = \"install\"");
    } else if (*enc_mode == "install") {
      e.mode = EncryptionKeyMode::install;
      e.key = path_of(required("encryption.key"));
      if (optional("encryption.type"))
        throw Error(ExitCode::usage, "profile: encryption.type is for mode = \"generate\" (install takes the key's type)");
    } else {
      throw Error(ExitCode::usage, fmt::format("profile: encryption.mode must be generate or install, not '{}'", *enc_mode));
    }
    p.encryption = e;
  } else {
    for (const char* key : {"encryption.type", "encryption.key"})
      if (optional(key)) throw Error(ExitCode::usage, fmt::format("profile: '{}' needs encryption.mode", key));
  }
  return p;
}

StationProfile read_profile(const fs::path& path) {
  if (!fs::exists(path)) throw Error(ExitCode::not_found, fmt::format("station profile {} does not exist", path.string()));
  return parse_profile(read_text_file(path), fs::absolute(path).parent_path());
}

std::string profile_hash(const fs::path& path) { return to_hex(digest(HashAlg::sha256, read_file(path))); }

}  // namespace kiln
