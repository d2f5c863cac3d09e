// Releases the service accepts, made in-process with the real signing code: an MCUboot image signed by
// a boot key and a SUIT envelope signed by a manifest key (the same ECDSA P-256 key unless told), and
// the PEM public keys a product must trust for them. Header-only.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <string>

#include "core/bytes.hpp"
#include "core/files.hpp"
#include "manifests/suit_create.hpp"
#include "manifests/suit_envelope.hpp"
#include "signing/file_key.hpp"
#include "signing/key_export.hpp"
#include "signing/mcuboot_sign.hpp"
#include "signing/signer.hpp"

namespace kiln::test {

struct TestReleaseFiles {
  std::string image, envelope;  // bytes
  std::filesystem::path image_file, envelope_file;
};

class TestReleaseMaker {
 public:
  // Keys go to `dir` (0600). `separate_manifest_key`: the manifest is signed by a second key.
  explicit TestReleaseMaker(std::filesystem::path dir, bool separate_manifest_key = false) : dir_(std::move(dir)) {
    boot_ = key("boot.pem");
    manifest_ = separate_manifest_key ? key("manifest.pem") : nullptr;
  }
  const Signer& boot_key() const { return *boot_; }
  const Signer& manifest_key() const { return manifest_ ? *manifest_ : *boot_; }
  std::string boot_pem() const { return pem(boot_key()); }
  std::string manifest_pem() const { return pem(manifest_key()); }
  // {"boot_keys": [...], "manifest_keys": [...]} fields for POST/PATCH /v1/products.
  template <class J>
  void add_trust(J& body) const {
    body["boot_keys"] = {boot_pem()};
    body["manifest_keys"] = {manifest_pem()};
  }

  // An image of `payload` pseudo-random bytes (seeded by name), signed (full key when asked), and its
  // envelope with `sequence`, signed by the manifest key (or `manifest_signer`).
  TestReleaseFiles make(const std::string& name, std::uint64_t sequence, std::size_t payload = 3000,
                        bool public_key_full = false, const Signer* manifest_signer = nullptr,
                        const Signer* image_signer = nullptr) const {
    std::string raw(payload, '\0');
    std::mt19937 rng(static_cast<unsigned>(std::hash<std::string>{}(name)));
    for (auto& c : raw) c = static_cast<char>(rng());
    auto app = dir_ / (name + ".bin");
    write_file_atomic(app, as_bytes(raw));
    mcuboot::SignOptions sign;
    sign.version = mcuboot::parse_version("1.0.0");
    sign.header_size = 0x200;
    sign.pad_header = true;
    sign.slot_size = 0x1000000;
    sign.public_key_full = public_key_full;
    TestReleaseFiles out;
    out.image_file = dir_ / (name + ".signed.bin");
    mcuboot::sign_image(app, out.image_file, sign, image_signer ? image_signer : boot_.get());
    suit::CreateOptions create;
    create.components.push_back({out.image_file, ""});
    create.vendor_id = suit::vendor_id_from_domain("example.com");
    create.sequence_number = sequence;
    Bytes envelope = suit::encode_envelope(suit::create_envelope(
        suit::describe(create), {}, {manifest_signer ? manifest_signer : &manifest_key()}));
    out.envelope_file = dir_ / (name + ".suit");
    write_file_atomic(out.envelope_file, envelope);
    auto image = read_file(out.image_file);
    out.image.assign(image.begin(), image.end());
    out.envelope.assign(envelope.begin(), envelope.end());
    return out;
  }

  std::unique_ptr<Signer> key(const std::string& name) const {
    write_file_atomic(dir_ / name, as_bytes(generate_private_key_pem(KeyType::ecdsa_p256, std::nullopt)), 0600);
    return load_file_signer((dir_ / name).string(), std::nullopt);
  }

 private:
  static std::string pem(const Signer& s) {
    auto bytes = export_public_key(s.public_key_der(), PublicKeyFormat::pem);
    return std::string(bytes.begin(), bytes.end());
  }
  std::filesystem::path dir_;
  std::unique_ptr<Signer> boot_, manifest_;
};

}  // namespace kiln::test
