// libFuzzer target for the board-side update check (64:8 and the update agent): any envelope bytes
// come back as a result with a named check, never a crash or an exception.
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/files.hpp"
#include "emulator/update_check.hpp"

namespace {

// The SUIT draft's example public key (the seeds are the draft's signed examples).
const char* draft_public_key =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEhJaBGq4LqqvSYVcYnuzaJr6qi/Eb\n"
    "bz/m4rVlnIXbwK07HypLbAmBMcCjbazR14vTgdzfsJwFLbM5kdtzOLSolg==\n"
    "-----END PUBLIC KEY-----\n";

kiln::Bytes key_der() {
  BIO* bio = BIO_new_mem_buf(draft_public_key, -1);
  EVP_PKEY* key = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  int len = i2d_PUBKEY(key, nullptr);
  kiln::Bytes der(static_cast<std::size_t>(len));
  unsigned char* p = der.data();
  i2d_PUBKEY(key, &p);
  EVP_PKEY_free(key);
  return der;
}

std::string image_path() {
  char path[] = "/tmp/kiln-update-check-fuzz-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) std::abort();
  close(fd);
  kiln::write_file_atomic(path, kiln::Bytes(1234, 0x5a));
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const kiln::Bytes key = key_der();
  static const std::string image = image_path();
  kiln::emu::UpdateCheckInput input;
  input.envelope = kiln::ByteView(data, size);
  input.manifest_key = key;
  input.image = image;
  input.boot_key_hash = kiln::Bytes(32, 1);
  input.installed_sequence = 1;
  kiln::emu::UpdateCheckResult result = kiln::emu::check_update(input);
  if (result.ok()) std::abort();  // no input describes this image and passes the MCUboot check
  if (result.failed_check.empty() || result.reason.empty()) std::abort();
  return 0;
}
