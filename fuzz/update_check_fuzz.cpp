// libFuzzer target for the board-side update check (64:8 and the update agent). Two modes, picked by
// the first byte:
//  - junk: any envelope bytes come back as a result with a named check, never a crash or an
//    exception, and never as a pass (nothing junk describes the image and carries a valid signature);
//  - release (1 input in 16): the rest of the input becomes an application and a sequence number; a
//    real MCUboot image signed by the boot key and a real SUIT envelope signed by the manifest key are
//    made from it, and the check must reach its success path. The same envelope must then fail on a
//    one-byte change of the image, and on an installed sequence at or above its own.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "core/files.hpp"
#include "emulator/update_check.hpp"
#include "fuzz/scratch_dir.hpp"
#include "manifests/suit_create.hpp"
#include "manifests/suit_envelope.hpp"
#include "signing/signer.hpp"
#include "signing/file_key.hpp"
#include "signing/key_info.hpp"
#include "signing/mcuboot_sign.hpp"

namespace {

struct Fixture {
  std::string dir;
  std::unique_ptr<kiln::Signer> manifest_key;
  std::unique_ptr<kiln::Signer> boot_key;
  kiln::Bytes boot_key_hash;

  Fixture() {
    dir = kiln::fuzz::scratch_dir().string();
    manifest_key = signer("manifest.pem", kiln::KeyType::ecdsa_p256);
    boot_key = signer("boot.pem", kiln::KeyType::ed25519);
    boot_key_hash = kiln::digest(kiln::HashAlg::sha256, kiln::mcuboot_public_key_bytes(boot_key->public_key_der()));
    // The image junk envelopes are checked against: written once (an fsync'd write per input would
    // cap the target at about a hundred executions a second).
    kiln::write_file_atomic(file("junk.bin"), kiln::Bytes(1234, 0x5a));
  }
  Fixture(const Fixture&) = delete;
  Fixture& operator=(const Fixture&) = delete;
  std::unique_ptr<kiln::Signer> signer(const std::string& name, kiln::KeyType type) const {
    kiln::write_file_atomic(dir + "/" + name, kiln::as_bytes(kiln::generate_private_key_pem(type, std::nullopt)), 0600);
    return kiln::load_file_signer(dir + "/" + name, std::nullopt);
  }
  std::string file(const std::string& name) const { return dir + "/" + name; }
};

const Fixture& fixture() {
  static const Fixture f;
  return f;
}

kiln::emu::UpdateCheckResult check(kiln::ByteView envelope, const std::string& image, std::uint64_t installed) {
  kiln::emu::UpdateCheckInput input;
  input.envelope = envelope;
  input.manifest_keys = {fixture().manifest_key->public_key_der()};
  input.image = image;
  input.boot_key_hashes = {fixture().boot_key_hash};
  input.installed_sequence = installed;
  return kiln::emu::check_update(input);
}

void release_mode(const std::uint8_t* data, std::size_t size) {
  const Fixture& f = fixture();
  std::uint64_t sequence = 1;
  for (std::size_t i = 0; i < 4 && i < size; ++i) sequence = (sequence << 8) | data[i];
  kiln::Bytes app(data + (size < 4 ? size : 4), data + size);
  if (app.size() > 8192) app.resize(8192);
  app.push_back(0x5a);  // never empty
  kiln::write_file_atomic(f.file("app.bin"), app);
  kiln::mcuboot::SignOptions sign;
  sign.version = kiln::mcuboot::parse_version("1.0.0");
  sign.header_size = 0x200;
  sign.pad_header = true;
  sign.slot_size = 0x10000;
  sign.public_key_full = true;
  kiln::mcuboot::sign_image(f.file("app.bin"), f.file("app.signed.bin"), sign, f.boot_key.get());

  kiln::suit::CreateOptions create;
  create.components.push_back({f.file("app.signed.bin"), ""});
  create.vendor_id = kiln::Bytes(16, 0x42);
  create.sequence_number = sequence;
  kiln::Bytes envelope = kiln::suit::encode_envelope(
      kiln::suit::create_envelope(kiln::suit::describe(create), {}, {f.manifest_key.get()}));

  auto ok = check(envelope, f.file("app.signed.bin"), sequence - 1);
  if (!ok.ok() || ok.sequence != sequence) std::abort();  // the success path must be reachable
  if (check(envelope, f.file("app.signed.bin"), sequence).ok()) std::abort();  // anti-rollback

  // One byte of the image changed (position and value from the input): the manifest digest fails.
  kiln::Bytes image = kiln::read_file(f.file("app.signed.bin"));
  std::size_t at = (sequence * 2654435761u) % image.size();
  image[at] ^= static_cast<std::uint8_t>(1u << (sequence % 8));
  kiln::write_file_atomic(f.file("changed.bin"), image);
  if (check(envelope, f.file("changed.bin"), sequence - 1).ok()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 0 && (data[0] & 0x0f) == 0x0f) {
    release_mode(data + 1, size - 1);
    return 0;
  }
  auto result = check(kiln::ByteView(data, size), fixture().file("junk.bin"), 1);
  if (result.ok()) std::abort();  // no input describes this image and carries the manifest key's signature
  if (result.failed_check.empty() || result.reason.empty()) std::abort();
  return 0;
}
