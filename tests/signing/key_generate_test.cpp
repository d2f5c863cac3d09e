// Tests for signing/key_generate: a PEM key file made 0600, encrypted with a passphrase, never replaced without
// force; the usage errors that name the option (token keys take neither a passphrase nor --force).
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <filesystem>

#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/key_generate.hpp"
#include "signing/key_ref.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;
using kiln::test::exit_code_of;

namespace {

unsigned mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 0777;
}

}  // namespace

TEST_CASE("key_generate: a PEM file, 0600, whose key is the one described") {
  test::TempDir dir;
  KeyGeneration request;
  request.type = KeyType::ed25519;
  request.file = dir.file("k.pem");
  auto key = generate_key(request, {});
  CHECK(key.keyref == request.file);
  CHECK_FALSE(key.on_token);
  CHECK_FALSE(key.encrypted);
  CHECK(key.info.type == KeyType::ed25519);
  CHECK(mode_of(request.file) == 0600);
  CHECK(key.info.fingerprint == describe_public_key(load_public_key(request.file)).fingerprint);
  CHECK(read_text_file(request.file).starts_with("-----BEGIN PRIVATE KEY-----"));

  // Not replaced without force; replaced (a new key) with it.
  CHECK(exit_code_of([&] { generate_key(request, {}); }) == ExitCode::conflict);
  request.force = true;
  CHECK(generate_key(request, {}).info.fingerprint != key.info.fingerprint);
}

TEST_CASE("key_generate: a passphrase encrypts the file; it opens only with it") {
  test::TempDir dir;
  KeyGeneration request;
  request.file = dir.file("k.pem");
  KeyOptions keys;
  keys.passphrase = "correct horse";
  auto key = generate_key(request, keys);
  CHECK(key.encrypted);
  CHECK(key.info.type == KeyType::ecdsa_p256);
  CHECK(read_text_file(request.file).starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
  CHECK(open_signer(request.file, keys)->public_key_der() == load_public_key(request.file, keys));
  CHECK(exit_code_of([&] { open_signer(request.file, {}); }) != ExitCode::ok);
}

TEST_CASE("key_generate: where the key goes must be said once; a token key takes no passphrase and no --force") {
  KeyGeneration nowhere;
  CHECK(exit_code_of([&] { generate_key(nowhere, {}); }) == ExitCode::usage);
  KeyGeneration token;
  token.pkcs11_uri = "pkcs11:token=T;object=k";
  token.passphrase_given = true;
  CHECK_THROWS_WITH(generate_key(token, {}), "--passphrase-file/--passphrase-env protect PEM files, not token keys");
  token.passphrase_given = false;
  token.force = true;
  CHECK_THROWS_WITH(generate_key(token, {}), "--force does not replace keys on a token");
}
