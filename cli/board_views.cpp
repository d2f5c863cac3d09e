#include "cli/board_views.hpp"

#include <fmt/format.h>

#include "core/error.hpp"
#include "signing/signer.hpp"

namespace kiln::cli {

std::string fingerprint(ByteView der) { return "sha256:" + to_hex(digest(HashAlg::sha256, der)); }

Json slot_json(const ImageSlot& slot) {
  Json out{{"image", slot.image},         {"slot", slot.slot},         {"version", slot.version},
           {"hash", to_hex(slot.hash)},   {"bootable", slot.bootable}, {"pending", slot.pending},
           {"confirmed", slot.confirmed}, {"active", slot.active},     {"permanent", slot.permanent}};
  if (slot.encrypted) out["encrypted"] = *slot.encrypted;
  if (slot.compressed) out["compressed"] = *slot.compressed;
  return out;
}

Json identity_json(const std::string& address, const BoardIdentity& id) {
  Json firmware = Json::array();
  for (const auto& slot : id.firmware)
    firmware.push_back({{"slot", slot.slot}, {"version", slot.version}, {"hash", to_hex(slot.hash)}});
  Json attestation = Json::array();
  for (const auto& cert : id.attestation_chain) attestation.push_back(fingerprint(cert));
  Json out{{"address", address},
           {"uid", id.uid},
           {"state", std::string(manufacturing_state_name(id.state))},
           {"firmware", firmware},
           {"attestation", attestation},
           {"transport_key", fingerprint(id.transport_key)},
           {"sequence", id.sequence}};
  // The installed firmware record (SUIT manifest), when the board has one.
  Json manifest_keys = Json::array();
  for (const auto& key : id.manifest_keys) manifest_keys.push_back(fingerprint(key));
  out["manifest_keys"] = manifest_keys;
  out["manifest_threshold"] = id.manifest_keys.empty() ? Json(nullptr) : Json(id.manifest_threshold);
  out["manifest_digest"] = id.manifest_digest.empty() ? Json(nullptr) : Json(to_hex(id.manifest_digest));
  // What key rotations installed (docs/key-rotation.md).
  out["trust_version"] = id.trust_version ? Json(*id.trust_version) : Json(nullptr);
  out["trust_product"] = id.trust_product.empty() ? Json(nullptr) : Json(id.trust_product);
  Json boot_key_hashes = Json::array();
  for (const auto& hash : id.boot_key_hashes) boot_key_hashes.push_back(to_hex(hash));
  out["boot_key_hashes"] = boot_key_hashes;
  return out;
}

Json install_result_json(const std::string& address, const std::string& file, const InstallResult& result,
                         bool confirm) {
  const auto& u = result.upload;
  Json slots = Json::array();
  for (const auto& slot : result.slots) slots.push_back(slot_json(slot));
  const double sent = static_cast<double>(u.size - u.resumed_from);
  return {{"address", address},
          {"file", file},
          {"size", u.size},
          {"sha256", to_hex(u.sha256)},
          {"resumed_from", u.resumed_from},
          {"packets", u.packets},
          {"seconds", u.seconds},
          {"bytes_per_second", u.seconds > 0 ? static_cast<std::uint64_t>(sent / u.seconds) : 0},
          {"already_running", result.already_running},
          {"mark", image_mark_name(install_mark(result, confirm))},
          {"reset", result.reset},
          {"slots", slots}};
}

void render_boards(const Context& ctx, const std::vector<BoardSummary>& boards) {
  auto out = ctx.records();
  for (const auto& b : boards)
    out->add({{"address", b.address.text()}, {"uid", b.uid}, {"state", b.state}, {"firmware", b.firmware},
              {"status", b.error.empty() ? "ok" : b.error}});
  out->finish();
}

void render_slots(const Context& ctx, const std::vector<ImageSlot>& slots) {
  auto out = ctx.records();
  for (const auto& slot : slots) out->add(slot_json(slot));
  out->finish();
}

void render_install(const Context& ctx, const std::string& address, const std::string& file,
                    const InstallResult& result, bool confirm) {
  if (result.already_running)
    ctx.info(fmt::format("board {} already runs {}: nothing uploaded{}", address, file, confirm ? "; it is confirmed" : ""));
  ctx.render(install_result_json(address, file, result, confirm));
}

Json board_state_json(const std::string& address, const BoardIdentity& identity) {
  return {{"address", address}, {"uid", identity.uid}, {"state", std::string(manufacturing_state_name(identity.state))}};
}

Json state_change_json(const std::string& address, ManufacturingState reached, bool dry_run) {
  Json out{{"address", address}};
  out[dry_run ? "would_become" : "state"] = std::string(manufacturing_state_name(reached));
  out["dry_run"] = dry_run;
  return out;
}

void confirm_state_change(const Context& ctx, const std::string& address, const std::string& state) {
  if (!ctx.stdin_is_terminal())
    throw Error(ExitCode::conflict, fmt::format("refusing to advance board {} to {} without --yes", address, state),
                "the change is irreversible: check it with --dry-run, then repeat with --yes");
  if (!ctx.confirm(fmt::format("Advance board {} to {}? This cannot be undone.", address, state)))
    throw Error(ExitCode::interrupted, "not confirmed; nothing changed");
}

}  // namespace kiln::cli
