// Station profile: TOML written and read with toml++ (strings escaped and unescaped by the library, each
// value's type and line known, repeated keys and tables refused by the parser).
#include "provisioning/profile.hpp"

#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/signer.hpp"

namespace kiln {

namespace fs = std::filesystem;

namespace {

enum class ValueKind { string, integer, strings };

// Every key a profile may hold, with the type its value must have.
const std::map<std::string, ValueKind> known_keys = {
    {"station.product", ValueKind::string}, {"station.id", ValueKind::string},
    {"station.ledger", ValueKind::string}, {"station.quota", ValueKind::integer},
    {"station.checkpoint_every", ValueKind::integer}, {"station.key", ValueKind::string},
    {"ca.key", ValueKind::string}, {"ca.certificate", ValueKind::string}, {"ca.validity_days", ValueKind::integer},
    {"attestation.vendor_root", ValueKind::string}, {"identity.mode", ValueKind::string},
    {"install.boot_key_hash", ValueKind::string}, {"install.service_url", ValueKind::string},
    {"install.trust_anchor", ValueKind::string}, {"install.final_state", ValueKind::string},
    {"firmware.image", ValueKind::string}, {"firmware.manifest", ValueKind::string},
    {"firmware.manifest_key", ValueKind::string}, {"firmware.manifest_keys", ValueKind::strings},
    {"firmware.manifest_threshold", ValueKind::integer}, {"firmware.image_sha256", ValueKind::string},
    {"firmware.manifest_sha256", ValueKind::string}, {"encryption.mode", ValueKind::string},
    {"encryption.type", ValueKind::string}, {"encryption.key", ValueKind::string}};

std::int64_t in_range(const std::string& key, std::int64_t n, ProfileRange range) {
  if (n >= range.min && n <= range.max) return n;
  throw Error(ExitCode::usage,
              fmt::format("profile: {} must be an integer from {} to {}, not '{}'", key, range.min, range.max, n));
}

const char* kind_name(ValueKind kind) {
  switch (kind) {
    case ValueKind::string: return "a string";
    case ValueKind::integer: return "an integer";
    case ValueKind::strings: return "an array of strings";
  }
  return "a value";
}

// The profile's values by type, after checking every key and type (a list is the one array of strings).
struct RawProfile {
  std::map<std::string, std::string> strings;
  std::map<std::string, std::int64_t> integers;
  std::optional<std::vector<std::string>> manifest_keys;
};

RawProfile read_values(const std::string& text) {
  toml::table root;
  try {
    root = toml::parse(text);
  } catch (const toml::parse_error& e) {
    throw Error(ExitCode::usage,
                fmt::format("profile line {}: not valid TOML: {}", e.source().begin.line, std::string(e.description())),
                "fix the profile, or write a new one with kiln factory init");
  }
  RawProfile raw;
  for (auto&& [section, node] : root) {
    auto line = section.source().begin.line;
    const toml::table* table = node.as_table();
    if (!table)
      throw Error(ExitCode::usage, fmt::format("profile line {}: unknown key '{}' (every key belongs to a table such as "
                                               "[station])", line, std::string(section.str())));
    for (auto&& [name, value] : *table) {
      std::string key = fmt::format("{}.{}", section.str(), name.str());
      line = name.source().begin.line;
      auto known = known_keys.find(key);
      if (known == known_keys.end())
        throw Error(ExitCode::usage, fmt::format("profile line {}: unknown key '{}'", line, key));
      bool fits = false;
      switch (known->second) {
        case ValueKind::string:
          if (auto s = value.value<std::string>(); s && value.is_string()) raw.strings[key] = *s, fits = true;
          break;
        case ValueKind::integer:
          if (auto n = value.value<std::int64_t>(); n && value.is_integer()) raw.integers[key] = *n, fits = true;
          break;
        case ValueKind::strings:
          if (const toml::array* list = value.as_array();
              list && (list->empty() || list->is_homogeneous(toml::node_type::string))) {
            raw.manifest_keys.emplace();
            for (auto&& item : *list) raw.manifest_keys->push_back(*item.value<std::string>());
            fits = true;
          }
          break;
      }
      if (!fits)
        throw Error(ExitCode::usage, fmt::format("profile line {}: '{}' must be {}", line, key, kind_name(known->second)));
    }
  }
  return raw;
}

// One [section] of the written profile.
void write_section(std::ostringstream& out, std::string_view name, toml::table table) {
  // Basic (double-quoted) strings throughout: toml++ would pick literal ones where it can.
  constexpr auto flags = toml::toml_formatter::default_flags & ~toml::format_flags::allow_literal_strings;
  out << '\n' << toml::toml_formatter(toml::table{{name, std::move(table)}}, flags) << '\n';
}

}  // namespace

std::string_view identity_mode_name(IdentityMode mode) { return mode == IdentityMode::csr ? "csr" : "inject"; }

std::string profile_to_toml(const StationProfile& p) {
  std::ostringstream out;
  out << "# kiln station profile: what this station does to every board (kiln factory provision / run)\n";
  toml::table station{{"product", p.product}, {"id", p.station_id}, {"ledger", p.ledger.string()},
                      {"checkpoint_every", p.checkpoint_every}, {"key", p.station_key}};
  if (p.quota) station.insert("quota", *p.quota);
  write_section(out, "station", std::move(station));
  write_section(out, "ca", toml::table{{"key", p.ca_key}, {"certificate", p.ca_certificate.string()},
                            {"validity_days", p.validity_days}});
  write_section(out, "attestation", toml::table{{"vendor_root", p.vendor_root.string()}});
  write_section(out, "identity", toml::table{{"mode", std::string(identity_mode_name(p.identity))}});
  toml::table install{{"boot_key_hash", p.boot_key_hash}, {"trust_anchor", p.trust_anchor.string()},
                      {"final_state", std::string(manufacturing_state_name(p.final_state))}};
  if (p.service_url) install.insert("service_url", *p.service_url);
  write_section(out, "install", std::move(install));
  if (p.firmware) {
    toml::array keys;
    for (const auto& key : p.firmware->manifest_keys) keys.push_back(key);
    write_section(out, "firmware",
                  toml::table{{"image", p.firmware->image.string()}, {"image_sha256", p.firmware->image_sha256},
                   {"manifest", p.firmware->manifest.string()}, {"manifest_sha256", p.firmware->manifest_sha256},
                   {"manifest_keys", std::move(keys)},
                   {"manifest_threshold", static_cast<std::int64_t>(p.firmware->manifest_threshold)}});
  }
  if (p.encryption) {
    if (p.encryption->mode == EncryptionKeyMode::generate)
      write_section(out, "encryption", toml::table{{"mode", "generate"}, {"type", p.encryption->type}});
    else
      write_section(out, "encryption", toml::table{{"mode", "install"}, {"key", p.encryption->key.string()}});
  }
  return out.str();
}

void write_profile(const fs::path& path, const StationProfile& profile, bool overwrite) {
  write_file_atomic(path, as_bytes(profile_to_toml(profile)), 0644,
                    overwrite ? AtomicFile::Overwrite::allow : AtomicFile::Overwrite::refuse);
}

StationProfile parse_profile(const std::string& toml, const fs::path& base_dir) {
  const RawProfile raw = read_values(toml);
  auto missing = [](const std::string& key) {
    return Error(ExitCode::usage, fmt::format("profile: '{}' is missing", key), "kiln factory init writes a complete profile");
  };
  // A string key (an empty string counts as absent), and an integer key within its range.
  auto optional = [&](const std::string& key) -> std::optional<std::string> {
    auto it = raw.strings.find(key);
    if (it == raw.strings.end() || it->second.empty()) return std::nullopt;
    return it->second;
  };
  auto required = [&](const std::string& key) {
    if (auto value = optional(key)) return *value;
    throw missing(key);
  };
  auto integer = [&](const std::string& key, ProfileRange range) -> std::optional<std::int64_t> {
    auto it = raw.integers.find(key);
    if (it == raw.integers.end()) return std::nullopt;
    return in_range(key, it->second, range);
  };
  auto present = [&](const std::string& key) {
    return optional(key) || raw.integers.contains(key) || (key == "firmware.manifest_keys" && raw.manifest_keys);
  };
  auto path_of = [&](const std::string& value) { return fs::path(value).is_absolute() ? fs::path(value) : base_dir / value; };
  auto keyref_of = [&](const std::string& value) { return value.rfind("pkcs11:", 0) == 0 ? value : path_of(value).string(); };

  StationProfile p;
  p.product = required("station.product");
  p.station_id = optional("station.id").value_or("station");
  p.ledger = path_of(optional("station.ledger").value_or("station-ledger.sqlite"));
  p.quota = integer("station.quota", profile_range::quota);
  if (auto every = integer("station.checkpoint_every", profile_range::checkpoint_every))
    p.checkpoint_every = static_cast<int>(*every);
  p.ca_key = keyref_of(required("ca.key"));
  p.station_key = optional("station.key") ? keyref_of(*optional("station.key")) : p.ca_key;
  p.ca_certificate = path_of(required("ca.certificate"));
  if (auto days = integer("ca.validity_days", profile_range::validity_days)) p.validity_days = static_cast<int>(*days);
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
    auto hex_of = [&](const std::string& key, const std::string& value, std::size_t min_bytes, std::size_t max_bytes) {
      Bytes bytes;
      try {
        bytes = from_hex(value);
      } catch (const std::exception&) {
      }
      if (bytes.size() < min_bytes || bytes.size() > max_bytes || value.size() != 2 * bytes.size())
        throw Error(ExitCode::usage, fmt::format("profile: {} must be hex ({} to {} bytes)", key, min_bytes, max_bytes));
      return value;
    };
    fw.image_sha256 = hex_of("firmware.image_sha256", required("firmware.image_sha256"), 32, 32);
    fw.manifest_sha256 = hex_of("firmware.manifest_sha256", required("firmware.manifest_sha256"), 32, 32);
    // The manifest keys: `manifest_keys` and `manifest_threshold` (M of N), or one `manifest_key` (1 of 1, a
    // profile from before M of N).
    if (auto single = optional("firmware.manifest_key")) {
      if (raw.manifest_keys)
        throw Error(ExitCode::usage, "profile: firmware.manifest_key and firmware.manifest_keys cannot both be set");
      fw.manifest_keys = {hex_of("firmware.manifest_key", *single, 32, 1024)};
      if (present("firmware.manifest_threshold"))
        throw Error(ExitCode::usage, "profile: firmware.manifest_threshold goes with firmware.manifest_keys");
    } else {
      if (!raw.manifest_keys || raw.manifest_keys->empty()) throw missing("firmware.manifest_keys");
      for (const auto& key : *raw.manifest_keys)
        fw.manifest_keys.push_back(hex_of("firmware.manifest_keys", key, 32, 1024));
      auto threshold =
          integer("firmware.manifest_threshold", {1, static_cast<std::int64_t>(fw.manifest_keys.size())});
      if (!threshold) throw missing("firmware.manifest_threshold");
      fw.manifest_threshold = static_cast<std::uint64_t>(*threshold);
      for (std::size_t i = 0; i < fw.manifest_keys.size(); ++i)
        for (std::size_t j = 0; j < i; ++j)
          if (fw.manifest_keys[i] == fw.manifest_keys[j])
            throw Error(ExitCode::usage, "profile: firmware.manifest_keys lists a key twice");
    }
    p.firmware = fw;
  } else {
    for (const char* key : {"firmware.manifest", "firmware.manifest_key", "firmware.manifest_keys",
                            "firmware.manifest_threshold", "firmware.image_sha256", "firmware.manifest_sha256"})
      if (present(key)) throw Error(ExitCode::usage, fmt::format("profile: '{}' needs firmware.image", key));
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
