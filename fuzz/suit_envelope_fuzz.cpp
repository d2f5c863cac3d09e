// libFuzzer target for the SUIT envelope decoder: never crash; whatever decodes must re-encode identically,
// and its JSON form must round-trip to the same bytes (a throw on that path is a finding, not swallowed).
#include <cstdint>
#include <algorithm>
#include <cstdlib>

#include "core/error.hpp"
#include "manifests/suit_envelope.hpp"
#include "manifests/suit_json.hpp"
#include "manifests/suit_verify.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kiln::ByteView input(data, size);
  kiln::suit::Envelope envelope;
  try {
    envelope = kiln::suit::parse_envelope(input);
  } catch (const kiln::Error&) {
    return 0;  // refused with a reason: the expected outcome for most inputs
  }
  // The decoder accepts only deterministic CBOR, so decode -> encode and decode -> JSON -> encode are identities.
  if (kiln::suit::encode_envelope(envelope) != kiln::Bytes(input.begin(), input.end())) std::abort();
  // The JSON round trip of anything the decoder accepted is an identity; a throw here is a finding
  // (the JSON form must represent every envelope the decoder accepts), not an expected refusal.
  // Through text too, as `manifest show -o json` and `manifest encode` do.
  {
    auto json = kiln::suit::envelope_to_json(envelope);
    if (kiln::suit::encode_envelope(kiln::suit::envelope_from_json(json)) != kiln::Bytes(input.begin(), input.end()))
      std::abort();
    if (kiln::suit::envelope_to_json(kiln::suit::envelope_from_json(json)) != json) std::abort();
    auto reread = kiln::suit::Json::parse(json.dump(2));
    if (kiln::suit::encode_envelope(kiln::suit::envelope_from_json(reread)) != kiln::Bytes(input.begin(), input.end()))
      std::abort();
  }
  try {
    kiln::suit::VerifyOptions options;
    options.allow_unsigned = true;
    kiln::suit::verify_envelope(input, options);
  } catch (const kiln::Error&) {
  }
  // The authentication wrapper (attached COSE payloads are refused) and a trusted key taken from
  // the input itself: key validation must refuse junk, the point at infinity or off-curve points.
  try {
    (void)kiln::suit::authentication(envelope);
  } catch (const kiln::Error&) {
  }
  try {
    kiln::suit::VerifyOptions options;
    options.keys.push_back({"fuzz", kiln::Bytes(input.begin(), input.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(size, 91)))});
    kiln::suit::verify_envelope(input, options);
  } catch (const kiln::Error&) {
  }
  return 0;
}
