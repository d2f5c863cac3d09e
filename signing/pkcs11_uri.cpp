// RFC 7512 URI parsing: "pkcs11:" path-attributes (';') ["?" query-attributes ('&')], percent-decoded.
#include "signing/pkcs11_uri.hpp"

#include <fmt/format.h>
#include <charconv>

#include "core/error.hpp"

namespace kiln {
namespace {

constexpr std::string_view scheme = "pkcs11:";
constexpr std::string_view uri_hint = "write it as pkcs11:token=T;object=LABEL;id=%01?pin-source=FILE (RFC 7512)";

[[noreturn]] void malformed(const std::string& what) {
  throw Error(ExitCode::usage, "malformed pkcs11: URI: " + what, std::string(uri_hint));
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-encodes everything outside RFC 3986 unreserved characters, ':' and '@' (and '/' in queries).
std::string percent_encode(std::string_view text, bool in_query = false) {
  std::string out;
  for (unsigned char c : text) {
    bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
                 c == '_' || c == '~' || c == ':' || c == '@' || (in_query && c == '/');
    if (plain)
      out += static_cast<char>(c);
    else
      out += fmt::format("%{:02X}", c);
  }
  return out;
}

std::string percent_encode_bytes(ByteView bytes) {
  std::string out;
  for (auto b : bytes) out += fmt::format("%{:02X}", b);
  return out;
}

// Splits "name=value" (the value may contain further '='). Secrets may follow '=': never echo them.
std::pair<std::string_view, std::string_view> split_attribute(std::string_view attribute, std::string_view part) {
  auto eq = attribute.find('=');
  if (eq == std::string_view::npos || eq == 0)
    malformed(fmt::format("a {} attribute is not of the form name=value", part));
  return {attribute.substr(0, eq), attribute.substr(eq + 1)};
}

template <typename T>
void set_once(std::optional<T>& field, T value, std::string_view name) {
  if (field) malformed(fmt::format("attribute '{}' appears more than once", name));
  field = std::move(value);
}

std::string pin_source_path(std::string_view source) {
  if (source.starts_with("|"))
    malformed("pin-source commands ('|program') are not supported; name a file holding the PIN");
  if (!source.starts_with("file:")) return std::string(source);
  std::string_view rest = source.substr(5);
  if (rest.starts_with("//")) {
    rest.remove_prefix(2);
    auto slash = rest.find('/');
    std::string_view host = rest.substr(0, slash);
    if (!host.empty() && host != "localhost")
      malformed(fmt::format("pin-source names a file on host '{}'; only local files can be read", host));
    if (slash == std::string_view::npos) malformed("pin-source file: URI has no path");
    rest = rest.substr(slash);
  }
  if (rest.empty()) malformed("pin-source file: URI has no path");
  return std::string(rest);
}

void parse_path_attribute(Pkcs11Uri& uri, std::string_view name, std::string_view raw) {
  std::string value = percent_decode(raw, name);
  if (name == "token") return set_once(uri.token, value, name);
  if (name == "manufacturer") return set_once(uri.manufacturer, value, name);
  if (name == "serial") return set_once(uri.serial, value, name);
  if (name == "model") return set_once(uri.model, value, name);
  if (name == "object") return set_once(uri.object, value, name);
  if (name == "id") return set_once(uri.id, Bytes(value.begin(), value.end()), name);
  if (name == "type") {
    if (value != "private" && value != "public" && value != "cert" && value != "secret-key" && value != "data")
      malformed(fmt::format("type '{}' is not one of private, public, cert, secret-key, data", value));
    return set_once(uri.type, value, name);
  }
  if (name == "slot-id") {
    unsigned long slot = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), slot);
    if (value.empty() || ec != std::errc() || end != value.data() + value.size())
      malformed(fmt::format("slot-id '{}' is not a decimal number", value));
    return set_once(uri.slot_id, slot, name);
  }
  // Attributes that describe the library or slot narrow nothing kiln needs; accept them.
  if (name == "library-manufacturer" || name == "library-description" || name == "library-version" ||
      name == "slot-manufacturer" || name == "slot-description" || name.starts_with("x-"))
    return;
  malformed(fmt::format("unknown path attribute '{}'", name));
}

void parse_query_attribute(Pkcs11Uri& uri, std::string_view name, std::string_view raw) {
  if (name == "pin-value") return set_once(uri.pin_value, percent_decode(raw, name), name);
  std::string value = percent_decode(raw, name);
  if (name == "pin-source") return set_once(uri.pin_source, pin_source_path(value), name);
  if (name == "module-path") return set_once(uri.module_path, value, name);
  if (name == "module-name")
    malformed("module-name is not supported; give the module file with module-path= or --pkcs11-module");
  if (name.starts_with("x-")) return;
  malformed(fmt::format("unknown query attribute '{}'", name));
}

}  // namespace

std::string percent_decode(std::string_view text, std::string_view attribute) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c != '%') {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
        malformed(fmt::format("attribute '{}' holds a control character", attribute));
      out += c;
      continue;
    }
    if (i + 2 >= text.size()) malformed(fmt::format("attribute '{}' ends in a truncated %-escape", attribute));
    int high = hex_value(text[i + 1]);
    int low = hex_value(text[i + 2]);
    if (high < 0 || low < 0)
      malformed(fmt::format("attribute '{}' has a %-escape that is not two hex digits", attribute));
    out += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return out;
}

Pkcs11Uri parse_pkcs11_uri(std::string_view text) {
  if (text.size() < scheme.size() || text.substr(0, scheme.size()) != scheme)
    malformed("it does not start with 'pkcs11:'");
  text.remove_prefix(scheme.size());
  Pkcs11Uri uri;
  auto question = text.find('?');
  std::string_view path = text.substr(0, question);
  std::string_view query = question == std::string_view::npos ? std::string_view{} : text.substr(question + 1);

  while (!path.empty()) {
    auto semicolon = path.find(';');
    std::string_view attribute = path.substr(0, semicolon);
    path = semicolon == std::string_view::npos ? std::string_view{} : path.substr(semicolon + 1);
    if (attribute.empty()) continue;  // tolerate "pkcs11:;token=T" and trailing ';'
    auto [name, value] = split_attribute(attribute, "path");
    parse_path_attribute(uri, name, value);
  }
  while (!query.empty()) {
    auto ampersand = query.find('&');
    std::string_view attribute = query.substr(0, ampersand);
    query = ampersand == std::string_view::npos ? std::string_view{} : query.substr(ampersand + 1);
    if (attribute.empty()) continue;
    auto [name, value] = split_attribute(attribute, "query");
    parse_query_attribute(uri, name, value);
  }
  if (uri.pin_source && uri.pin_value) malformed("give either pin-source or pin-value, not both");
  return uri;
}

std::string Pkcs11Uri::description() const {
  std::string path;
  auto add = [&path](std::string_view name, const std::string& encoded) {
    path += fmt::format("{}{}={}", path.empty() ? "" : ";", name, encoded);
  };
  if (token) add("token", percent_encode(*token));
  if (manufacturer) add("manufacturer", percent_encode(*manufacturer));
  if (serial) add("serial", percent_encode(*serial));
  if (model) add("model", percent_encode(*model));
  if (slot_id) add("slot-id", std::to_string(*slot_id));
  if (object) add("object", percent_encode(*object));
  if (id) add("id", percent_encode_bytes(*id));
  if (type) add("type", *type);
  std::string out = "pkcs11:" + path;
  if (module_path) out += "?module-path=" + percent_encode(*module_path, true);
  return out;
}

std::string Pkcs11Uri::token_description() const {
  if (token) return fmt::format("'{}'", *token);
  if (serial) return fmt::format("with serial {}", *serial);
  if (model) return fmt::format("of model {}", *model);
  if (manufacturer) return fmt::format("by {}", *manufacturer);
  if (slot_id) return fmt::format("in slot {}", *slot_id);
  return "(the only one)";
}

std::string Pkcs11Uri::object_description() const {
  std::string out;
  if (object) out = fmt::format("'{}'", *object);
  if (id) out += fmt::format("{}id {}", out.empty() ? "" : " ", to_hex(*id));
  return out.empty() ? "(any)" : out;
}

}  // namespace kiln
