// The SUIT envelope as JSON with every element named as draft-ietf-suit-manifest-37 names it, and back.
#pragma once

#include <nlohmann/json.hpp>

#include "manifests/suit_envelope.hpp"

namespace kiln::suit {

using Json = nlohmann::ordered_json;

// Walks the whole envelope by the draft's schema. Throws Error(failure) with the byte offset and the
// reason when an element has the wrong shape. Elements the draft does not name become
// "<key>": {"cbor": "<hex>"} so nothing is lost.
Json envelope_to_json(const Envelope& envelope);

// Inverse of envelope_to_json: encoding the result reproduces the original bytes. Throws Error(failure)
// naming the JSON path of anything it cannot turn into CBOR.
Envelope envelope_from_json(const Json& json);

// SUIT_Digest as {"algorithm-id": "sha256", "digest-bytes": "<hex>"}.
Json digest_to_json(const Digest& digest);
Digest digest_from_json(const Json& json, const std::string& path);

// Canonical 8-4-4-4-12 form of a 16-byte UUID.
std::string uuid_string(ByteView uuid);
// Parses 8-4-4-4-12 (or 32 hex digits); throws Error(usage).
Bytes parse_uuid(const std::string& text);

}  // namespace kiln::suit
