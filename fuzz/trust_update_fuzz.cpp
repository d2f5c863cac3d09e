// libFuzzer target: the trust-update parser and the board's apply rule (the agent hands every trust update the
// service sends to trust::check). parse returns an update or throws kiln::Error(verification_failed); check never
// throws, and accepts nothing against a trust state without keys (no signature can meet it).
#include <cstddef>
#include <cstdint>

#include "core/error.hpp"
#include "manifests/trust_update.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kiln::ByteView input(data, size);
  try {
    kiln::trust::TrustUpdate update = kiln::trust::parse(input);
    (void)update;
  } catch (const kiln::Error& e) {
    if (e.code() != kiln::ExitCode::verification_failed) __builtin_trap();
  }
  kiln::trust::TrustState none;
  none.manifest_threshold = 1;
  kiln::trust::Decision decision = kiln::trust::check(input, none);
  if (decision.ok()) __builtin_trap();
  // A state whose key is not a key: still no acceptance, and no exception.
  none.manifest_keys = {kiln::Bytes(input.begin(), input.begin() + static_cast<std::ptrdiff_t>(size < 91 ? size : 91))};
  if (kiln::trust::check(input, none).ok()) __builtin_trap();
  return 0;
}
