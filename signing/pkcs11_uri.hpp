// RFC 7512 pkcs11: URIs: which module, token and object a KEYREF names, and where its PIN comes from.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "core/bytes.hpp"

namespace kiln {

struct Pkcs11Uri {
  // Path attributes: select the token (all given ones must match) and the object.
  std::optional<std::string> token;         // CK_TOKEN_INFO.label
  std::optional<std::string> manufacturer;  // CK_TOKEN_INFO.manufacturerID
  std::optional<std::string> serial;        // CK_TOKEN_INFO.serialNumber
  std::optional<std::string> model;         // CK_TOKEN_INFO.model
  std::optional<unsigned long> slot_id;     // slot-id (decimal)
  std::optional<std::string> object;        // CKA_LABEL
  std::optional<Bytes> id;                  // CKA_ID, percent-encoded bytes ("id=%01")
  std::optional<std::string> type;          // private, public, cert, secret-key, data

  // Query attributes.
  std::optional<std::string> module_path;
  std::optional<std::string> pin_source;  // a path; "file:" URIs are reduced to their path
  std::optional<std::string> pin_value;   // secret: never part of description()

  // The URI again, without pin-value and pin-source, for messages.
  std::string description() const;
  // "label T" / "serial 1234": how messages name the token.
  std::string token_description() const;
  // "object signkey, id 01": how messages name the object.
  std::string object_description() const;
};

// Parses `uri`; throws Error(usage) naming the offending attribute for anything malformed:
// no "pkcs11:" scheme, bad percent-encoding, unknown or repeated attributes, both pin-source and
// pin-value, an unknown type. Vendor attributes ("x-...") are accepted and ignored.
Pkcs11Uri parse_pkcs11_uri(std::string_view uri);

// Decodes %XX escapes; throws Error(usage) naming `attribute` for a truncated or non-hex escape.
std::string percent_decode(std::string_view text, std::string_view attribute);

}  // namespace kiln
