// libFuzzer target: a board's identity answer (64:0 body, CBOR) goes through the station's parser
// and every attestation check (chain, UID binding, transport-key signature, challenge and key
// statements) and is refused with kiln::Error only; it never crashes and never passes a check it
// cannot pass (the nonce is the fuzzer's own, so no input can have answered it).
#include <cstdint>
#include <cstdlib>

#include "core/error.hpp"
#include "provisioning/station_ca.hpp"
#include "transport/provisioning_group.hpp"
#include "transport/smp.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kiln::BoardIdentity identity;
  try {
    identity = kiln::parse_identity(kiln::smp::decode_body(kiln::ByteView(data, size)));
  } catch (const kiln::Error&) {
    return 0;
  }
  const kiln::Bytes nonce(32, 0xa5);
  try {
    if (!identity.attestation_chain.empty()) (void)kiln::attested_uid(identity.attestation_chain.front());
  } catch (const kiln::Error&) {
  }
  // The root the input brings itself: lets crafted chains get past the chain check.
  kiln::Bytes root = identity.attestation_chain.empty() ? kiln::Bytes{} : identity.attestation_chain.back();
  bool verified = false;
  try {
    kiln::verify_attestation(identity, root, nonce);
    verified = true;
  } catch (const kiln::Error&) {
  }
  if (verified) std::abort();  // a signature over a nonce the input never saw
  try {
    kiln::verify_key_attestation(identity, nonce, identity.transport_key, identity.attestation_signature);
  } catch (const kiln::Error&) {
  }
  return 0;
}
