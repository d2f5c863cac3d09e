// Station firmware: the image / manifest / manifest-key agreement checked at init and at every run.
#include "provisioning/firmware.hpp"

#include "signing/file_digest.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "core/error.hpp"
#include "core/files.hpp"
#include "manifests/suit_verify.hpp"
#include "signing/key_info.hpp"
#include "signing/mcuboot_sign.hpp"
#include "signing/signer.hpp"

namespace kiln {

bool StationFirmware::is_image(ByteView slot_hash) const {
  auto same = [&](const Bytes& b) { return !b.empty() && std::equal(b.begin(), b.end(), slot_hash.begin(), slot_hash.end()); };
  return same(image_sha256) || same(image_hash_tlv);
}

Bytes file_sha256(const std::filesystem::path& path) { return file_digest(HashAlg::sha256, path); }

StationFirmware check_firmware(const std::filesystem::path& image, const std::filesystem::path& manifest,
                               const std::vector<Bytes>& manifest_keys, std::uint64_t manifest_threshold,
                               const std::optional<Bytes>& boot_key) {
  StationFirmware fw;
  fw.image = image;
  fw.manifest_keys = manifest_keys;
  fw.manifest_threshold = manifest_threshold;
  mcuboot::ImageReport report;
  try {
    report = mcuboot::verify_image(image, boot_key);
  } catch (const Error& e) {
    std::string key = boot_key ? fmt::format(" with the boot key (key hash {})", describe_public_key(*boot_key).mcuboot_key_hash) : "";
    throw Error(ExitCode::verification_failed, fmt::format("image {} does not verify{}: {}", image.string(), key, e.what()),
                "sign the image with the boot key, or pass the boot key it was signed with");
  }
  // As boards report it (1:0): major.minor.revision, with +build only when there is one.
  const auto& v = report.image.header.version;
  fw.version = v.build ? mcuboot::format_version(v) : fmt::format("{}.{}.{}", v.major, v.minor, v.revision);
  fw.image_hash_tlv = report.computed_digest;
  fw.image_size = report.file_size;
  fw.manifest = read_file(manifest);
  fw.manifest_digest = digest(HashAlg::sha256, fw.manifest);
  fw.image_sha256 = file_sha256(image);
  suit::VerifyOptions options;
  for (std::size_t i = 0; i < fw.manifest_keys.size(); ++i)
    options.keys.push_back({fw.manifest_keys.size() == 1 ? std::string("the manifest key")
                                                         : fmt::format("manifest key {}", i + 1),
                            fw.manifest_keys[i]});
  // One key (1 of 1): it must have signed, as before M of N; several: the M-of-N count.
  if (fw.manifest_keys.size() > 1) options.threshold = fw.manifest_threshold;
  options.images.push_back(image);
  try {
    fw.sequence = suit::verify_envelope(fw.manifest, options).sequence_number;
  } catch (const Error& e) {
    throw Error(e.code() == ExitCode::verification_failed ? e.code() : ExitCode::verification_failed,
                fmt::format("manifest {} does not fit: {}", manifest.string(), e.what()), e.hint());
  }
  return fw;
}

}  // namespace kiln
