// Confidential delivery per device (docs/encrypted-delivery.md): a release encrypted for the service's
// delivery key goes to each device with its content key wrapped to that device's own image-encryption key.
// The body, hash and signature are the release's; only the unprotected TLV area differs.
#include <sys/stat.h>

#include <fmt/format.h>

#include "core/error.hpp"
#include "core/files.hpp"
#include "service/blob_file.hpp"
#include "service/handlers.hpp"
#include "service/store.hpp"
#include "signing/image_delivery.hpp"
#include "signing/key_ref.hpp"
#include "signing/signer.hpp"

namespace kiln::service {

std::shared_ptr<const mcuboot::ContentKeyOpener> load_delivery_key(const std::filesystem::path& pem) {
  // On a token: the URI names the module (module-path=) and the PIN (pin-source=, a 0600 file).
  if (is_pkcs11_uri(pem.string())) {
    try {
      return mcuboot::load_content_key_opener(pem.string());
    } catch (const Error& e) {
      throw Error(e.code(), fmt::format("delivery key: {}", e.what()), e.hint());
    }
  }
  struct stat st {};
  if (::stat(pem.c_str(), &st) != 0)
    throw Error(ExitCode::not_found, fmt::format("delivery key {} does not exist", pem.string()));
  if ((st.st_mode & 077) != 0)
    throw Error(ExitCode::usage,
                fmt::format("delivery key {} may be read by others (mode {:o}): it opens every release encrypted for "
                            "the service",
                            pem.string(), st.st_mode & 0777),
                fmt::format("chmod 600 {}", pem.string()));
  try {
    return mcuboot::load_content_key_opener_file(pem.string(), "the service's delivery key");
  } catch (const Error& e) {
    throw Error(ExitCode::usage, fmt::format("delivery key {}: {}", pem.string(), e.what()), e.hint());
  }
}

std::optional<DeviceImage> device_image(Call& call, const std::string& sha) {
  if (!call.config.delivery_key || call.who.device_id.empty()) return std::nullopt;
  const std::string& device = call.who.device_id;
  auto device_key = call.store.device_encryption_key(device);
  if (!device_key) return std::nullopt;
  if (auto made = call.store.find_device_image(device, sha)) return made;
  auto path = blob_path(call.config, call.who.tenant_id, sha);
  mcuboot::KeyTlvLocation at;
  try {
    at = mcuboot::locate_key_tlv(path);
  } catch (const Error&) {
    return std::nullopt;  // not an encrypted MCUboot image: delivered as it is
  }
  Bytes area;
  try {
    auto key = mcuboot::encryption_key_from_spki(from_hex(*device_key), fmt::format("device {}'s key", device));
    area = mcuboot::rewrapped_area(at, *call.config.delivery_key, key);
  } catch (const Error& e) {
    // Encrypted for another key (e.g. a product key every board holds), or a device key MCUboot cannot use:
    // the release goes out as uploaded, decided inside a check-in's telemetry unit.
    if (e.code() == ExitCode::verification_failed || e.code() == ExitCode::usage) return std::nullopt;
    throw;
  }
  // The image made here is saved: a check-in's telemetry unit, where that write needs the write order, goes there
  // before hashing the whole image, so the hash is done once (the wrap, a key exchange, twice).
  call.store.require_write_order();
  Hasher hasher(HashAlg::sha256);
  std::uint64_t size = mcuboot::stream_with_area(path, at, area, [&](ByteView piece) { hasher.update(piece); });
  DeviceImage made{device, sha, to_hex(area), to_hex(hasher.finish()), static_cast<std::int64_t>(size), now_iso8601()};
  call.store.save_device_image(made);
  return made;
}

Response agent_download_image(Call& call) {
  auto sha = call.params.empty() ? std::string() : call.params[0];
  std::optional<DeviceImage> mine;
  if (call.config.delivery_key && sha.size() == 64) mine = call.store.find_device_image(call.who.device_id, sha);
  if (!mine) return download_image(call);
  auto path = blob_path(call.config, call.who.tenant_id, sha);
  // The release's file, opened before it is parsed and sent from this descriptor: a delete meanwhile
  // cannot cut the answer short.
  std::shared_ptr<const BlobFile> file;
  mcuboot::KeyTlvLocation at;
  try {
    file = BlobFile::open(path);
    at = mcuboot::locate_key_tlv(path);
  } catch (const Error&) {
    throw ApiError{500, "internal", fmt::format("cannot read the content of image {}", sha)};
  }
  // The release with its unprotected area replaced by the device's (mcuboot::stream_with_area's layout).
  auto area = from_hex(mine->area);
  auto tail = static_cast<std::int64_t>(at.area_offset + at.area_size);
  StreamedBody whole{{{file, 0, static_cast<std::int64_t>(at.area_offset)},
                      {nullptr, 0, static_cast<std::int64_t>(area.size()), std::string(area.begin(), area.end())},
                      {file, tail, static_cast<std::int64_t>(at.file_size) - tail}}};
  if (whole.size() != mine->size)
    throw ApiError{500, "internal", fmt::format("image {} changed since it was wrapped for device {}", sha, call.who.device_id)};
  return content_response(call, std::move(whole));
}

}  // namespace kiln::service
