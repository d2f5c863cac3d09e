// Tests for cli/trust_views: the exact JSON `kiln trust` prints for a trust update.
#include <doctest/doctest.h>

#include "cli/trust_views.hpp"
#include "signing/signer.hpp"

using namespace kiln;
using namespace kiln::cli;

TEST_CASE("trust_views: a trust update renders its product, version, key fingerprints, threshold and boot keys") {
  trust::TrustUpdate update;
  update.product = "Thermo";
  update.version = 4;
  update.manifest_keys = {Bytes{'a', 'b', 'c'}, Bytes{}};
  update.manifest_threshold = 2;
  update.boot_key_hashes = {Bytes(32, 0x11)};
  update.boot_keys = {Bytes{1}, Bytes{2}, Bytes{3}};
  // A key's fingerprint is the first 16 hex digits of the SHA-256 of its DER (FIPS 180-2 vectors for "abc", "").
  CHECK(trust_update_json("rotate-4.cbor", update, 2).dump() ==
        R"({"file":"rotate-4.cbor","product":"Thermo","version":4,"manifest_keys":["ba7816bf8f01cfea","e3b0c44298fc1c14"],)"
        R"("manifest_threshold":2,"boot_key_hashes":[")" + std::string(64, '1') +
            R"("],"boot_keys":3,"signatures":2})");
  update.boot_keys.clear();
  CHECK(trust_update_json("f", update, 0)["boot_keys"] == 0);
  CHECK(trust_update_json("f", update, 0)["signatures"] == 0);
}
