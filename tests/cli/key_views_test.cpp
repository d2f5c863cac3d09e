// Tests for cli/key_views: a key's facts under its display name (a token URI without its PIN), "encrypted" for
// PEM files only, and a written signature.
#include <doctest/doctest.h>

#include "cli/key_views.hpp"

using namespace kiln;
using namespace kiln::cli;

TEST_CASE("key_views: a key's facts, named without a PIN; encrypted said for files only") {
  KeyInfo info{KeyType::ecdsa_p256, 256, "ab12", "cd34"};
  CHECK(key_info_json("k.pem", info) == Json{{"key", "k.pem"},
                                            {"type", "ecdsa-p256"},
                                            {"bits", 256},
                                            {"fingerprint", "sha256:ab12"},
                                            {"mcuboot_key_hash", "cd34"}});
  auto file = generated_key_json(GeneratedKey{"k.pem", info, true, false});
  CHECK(file["encrypted"] == true);
  CHECK(file["key"] == "k.pem");
  auto token = generated_key_json(GeneratedKey{"pkcs11:token=T;object=k?pin-value=1234", info, false, true});
  CHECK_FALSE(token.contains("encrypted"));
  CHECK(token["key"].get<std::string>().find("1234") == std::string::npos);
  CHECK(signature_json("k.pem", KeyType::ed25519, "sig.bin", 64) ==
        Json{{"key", "k.pem"}, {"type", "ed25519"}, {"output", "sig.bin"}, {"signature_bytes", 64}});
}
