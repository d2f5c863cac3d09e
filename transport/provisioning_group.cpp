// Provisioning group (64) client calls and the transport-key wrapping both ends share.
#include "transport/provisioning_group.hpp"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include <fmt/format.h>

#include "core/error.hpp"
#include "core/name_table.hpp"
#include "signing/key_wrap.hpp"
#include "signing/openssl_ptr.hpp"

namespace kiln {
namespace {

smp::Body call_group(SmpClient& client, smp::Op op, std::uint8_t command, smp::Body body = smp::Body::object()) {
  SmpRequest req{op, smp::group::kiln_provisioning, command, std::move(body)};
  auto rsp = client.call_raw(req);
  auto outcome = smp::response_outcome(rsp);
  if (outcome.ok()) return rsp;
  if (!outcome.group || *outcome.group != smp::group::kiln_provisioning) check_response(client.board(), req, rsp);
  ExitCode code = ExitCode::board;
  std::string hint;
  switch (outcome.rc) {
    case provisioning_rc::locked:
    case provisioning_rc::invalid_transition:
      code = ExitCode::conflict;
      hint = "manufacturing states only move forward; a locked board cannot be changed";
      break;
    case provisioning_rc::precondition:
    case provisioning_rc::no_device_key:
      code = ExitCode::conflict;
      hint = "run the missing provisioning step first (see docs/board-protocol.md)";
      break;
    case provisioning_rc::unwrap_failed:
    case provisioning_rc::chain_mismatch: code = ExitCode::verification_failed; break;
    case provisioning_rc::manifest_refused: code = ExitCode::verification_failed; break;
    case provisioning_rc::no_manifest_key:
      code = ExitCode::conflict;
      hint = "install the manifest key first (64:3 manifest_key)";
      break;
    default: break;
  }
  std::string reason;
  if (auto it = rsp.find("reason"); it != rsp.end() && it->is_string()) reason = ": " + it->get<std::string>();
  throw Error(code, fmt::format("board {} refused provisioning command {}: {}{}", client.board(), command,
                                provisioning_rc_name(outcome.rc), reason),
              hint);
}

std::vector<Bytes> bytes_array(const smp::Body& body, const char* key) {
  std::vector<Bytes> out;
  auto it = body.find(key);
  if (it == body.end() || !it->is_array()) return out;
  for (const auto& item : *it)
    if (item.is_binary()) out.emplace_back(item.get_binary().begin(), item.get_binary().end());
  return out;
}

// The board's manifest trust: `manifest_keys` + `manifest_threshold`, or (a board from before M of N) the
// single `manifest_key`, 1 of 1.
void read_manifest_trust(const smp::Body& rsp, std::vector<Bytes>& keys, std::uint64_t& threshold) {
  keys = bytes_array(rsp, "manifest_keys");
  threshold = rsp.contains("manifest_threshold") ? smp::get_uint(rsp, "manifest_threshold") : 0;
  if (keys.empty() && rsp.contains("manifest_key")) {
    keys.push_back(smp::get_bytes(rsp, "manifest_key"));
    threshold = 1;
  }
}

// The manufacturing state a board reports: a name kiln does not know is the board's fault (exit 4).
ManufacturingState reported_state(std::string_view board, const smp::Body& rsp) {
  std::string name = smp::get_text(rsp, "state");
  for (auto state : {ManufacturingState::blank, ManufacturingState::module_complete, ManufacturingState::device_complete})
    if (name == manufacturing_state_name(state)) return state;
  throw Error(ExitCode::board,
              fmt::format("protocol error: {} reports a manufacturing state kiln does not know: {}",
                          board.empty() ? std::string("the board") : fmt::format("board {}", board), smp::Body(name).dump(-1, ' ', true, smp::Body::error_handler_t::replace)),
              "kiln knows blank, module-complete and device-complete; update kiln or check the board's firmware");
}

}  // namespace

std::string_view provisioning_rc_name(int rc) {
  switch (rc) {
    case provisioning_rc::locked: return "locked by the manufacturing state";
    case provisioning_rc::no_device_key: return "no device key";
    case provisioning_rc::chain_mismatch: return "certificate chain does not match the device key";
    case provisioning_rc::unwrap_failed: return "wrapped key does not decrypt";
    case provisioning_rc::invalid_transition: return "manufacturing state can only move forward";
    case provisioning_rc::precondition: return "the next state needs data that is not installed";
    case provisioning_rc::invalid_argument: return "invalid argument";
    case provisioning_rc::manifest_refused: return "manifest refused";
    case provisioning_rc::no_manifest_key: return "no manifest key installed";
    default: return "unknown error";
  }
}

namespace {

constexpr NameTable<ManufacturingState, 3> manufacturing_state_names{{
    {ManufacturingState::blank, "blank"},
    {ManufacturingState::module_complete, "module-complete"},
    {ManufacturingState::device_complete, "device-complete"},
}};

}  // namespace

std::string_view manufacturing_state_name(ManufacturingState state) { return name_in(manufacturing_state_names, state); }

ManufacturingState parse_manufacturing_state(std::string_view name) {
  if (auto state = value_in(manufacturing_state_names, name)) return *state;
  throw Error(ExitCode::usage, fmt::format("unknown manufacturing state '{}'", name),
              "use blank, module-complete or device-complete");
}

Bytes attestation_statement(std::string_view label, ByteView nonce, std::string_view uid, ByteView key_spki) {
  if (nonce.size() > 0xffff || uid.size() > 0xffff)
    throw Error(ExitCode::usage, "an attestation nonce or UID is longer than 65535 bytes");
  Bytes out(label.begin(), label.end());
  auto put_length = [&](std::size_t n) {
    out.push_back(static_cast<std::uint8_t>(n >> 8));
    out.push_back(static_cast<std::uint8_t>(n & 0xff));
  };
  put_length(nonce.size());
  out.insert(out.end(), nonce.begin(), nonce.end());
  put_length(uid.size());
  out.insert(out.end(), uid.begin(), uid.end());
  out.insert(out.end(), key_spki.begin(), key_spki.end());
  return out;
}

BoardIdentity read_identity(SmpClient& client, ByteView nonce) {
  smp::Body request = smp::Body::object();
  if (!nonce.empty()) request["nonce"] = smp::binary(nonce);
  return parse_identity(call_group(client, smp::Op::read, provisioning_command::identity, request));
}

BoardIdentity parse_identity(const smp::Body& rsp) {
  BoardIdentity id;
  id.uid = smp::get_text(rsp, "uid");
  id.state = reported_state({}, rsp);
  id.attestation_chain = bytes_array(rsp, "attestation");
  id.transport_key = smp::get_bytes(rsp, "transport_key");
  id.transport_key_signature = smp::get_bytes(rsp, "transport_key_sig");
  if (rsp.contains("attestation_sig")) id.attestation_signature = smp::get_bytes(rsp, "attestation_sig");
  if (auto fw = rsp.find("firmware"); fw != rsp.end() && fw->is_array())
    for (const auto& slot : *fw) {
      auto version = slot.is_object() ? slot.find("version") : slot.end();
      if (!slot.is_object() || (version != slot.end() && !version->is_string()))
        throw Error(ExitCode::board, "the board's identity lists a firmware slot that is not {slot, version, hash}");
      id.firmware.push_back({static_cast<std::uint32_t>(smp::get_uint(slot, "slot")),
                             version != slot.end() ? version->get<std::string>() : std::string(),
                             smp::get_bytes(slot, "hash")});
    }
  read_manifest_trust(rsp, id.manifest_keys, id.manifest_threshold);
  if (rsp.contains("sequence")) id.sequence = smp::get_uint(rsp, "sequence");
  if (rsp.contains("manifest_digest")) id.manifest_digest = smp::get_bytes(rsp, "manifest_digest");
  if (rsp.contains("trust_version")) id.trust_version = smp::get_uint(rsp, "trust_version");
  if (rsp.contains("trust_product")) id.trust_product = smp::get_text(rsp, "trust_product");
  if (rsp.contains("boot_key_hashes")) id.boot_key_hashes = bytes_array(rsp, "boot_key_hashes");
  return id;
}

Bytes generate_device_key(SmpClient& client, const std::string& common_name) {
  smp::Body body = smp::Body::object();
  if (!common_name.empty()) body["cn"] = common_name;
  return smp::get_bytes(call_group(client, smp::Op::write, provisioning_command::generate_key, body), "csr");
}

AttestedKey generate_attested_device_key(SmpClient& client, const std::string& common_name, ByteView nonce) {
  smp::Body body{{"nonce", smp::binary(nonce)}};
  if (!common_name.empty()) body["cn"] = common_name;
  auto rsp = call_group(client, smp::Op::write, provisioning_command::generate_key, body);
  AttestedKey key;
  key.csr = smp::get_bytes(rsp, "csr");
  if (rsp.contains("public_key")) key.public_key = smp::get_bytes(rsp, "public_key");
  if (rsp.contains("key_attestation")) key.key_attestation = smp::get_bytes(rsp, "key_attestation");
  return key;
}

void install_certificate_chain(SmpClient& client, const std::vector<Bytes>& chain_der) {
  smp::Body chain = smp::Body::array();
  for (const auto& cert : chain_der) chain.push_back(smp::binary(cert));
  call_group(client, smp::Op::write, provisioning_command::install_chain, {{"chain", chain}});
}

void install_service_config(SmpClient& client, const ServiceConfig& config) {
  smp::Body body = smp::Body::object();
  if (config.boot_key_hash) body["boot_key_hash"] = smp::binary(*config.boot_key_hash);
  if (config.service_url) body["service_url"] = *config.service_url;
  if (config.trust_anchor_pem) body["trust_anchor"] = *config.trust_anchor_pem;
  if (!config.manifest_keys.empty()) {
    smp::Body keys = smp::Body::array();
    for (const auto& key : config.manifest_keys) keys.push_back(smp::binary(key));
    body["manifest_keys"] = keys;
    body["manifest_threshold"] = config.manifest_threshold;
  }
  call_group(client, smp::Op::write, provisioning_command::install_config, body);
}

Bytes inject_device_key(SmpClient& client, const WrappedKey& wrapped) {
  smp::Body body{{"epk", smp::binary(wrapped.ephemeral_public_key)},
                 {"iv", smp::binary(wrapped.iv)},
                 {"ct", smp::binary(wrapped.ciphertext)},
                 {"tag", smp::binary(wrapped.tag)}};
  return smp::get_bytes(call_group(client, smp::Op::write, provisioning_command::inject_key, body), "public_key");
}

Bytes generate_encryption_key(SmpClient& client, const std::string& type) {
  return smp::get_bytes(
      call_group(client, smp::Op::write, provisioning_command::generate_encryption_key, {{"type", type}}),
      "public_key");
}

Bytes inject_encryption_key(SmpClient& client, const WrappedKey& wrapped) {
  smp::Body body{{"epk", smp::binary(wrapped.ephemeral_public_key)},
                 {"iv", smp::binary(wrapped.iv)},
                 {"ct", smp::binary(wrapped.ciphertext)},
                 {"tag", smp::binary(wrapped.tag)}};
  return smp::get_bytes(call_group(client, smp::Op::write, provisioning_command::inject_encryption_key, body),
                        "public_key");
}

Bytes sign_challenge(SmpClient& client, ByteView challenge) {
  auto rsp = call_group(client, smp::Op::write, provisioning_command::sign_challenge,
                        {{"challenge", smp::binary(challenge)}});
  return smp::get_bytes(rsp, "signature");
}

ChallengeAnswer sign_challenge_attested(SmpClient& client, ByteView challenge) {
  auto rsp = call_group(client, smp::Op::write, provisioning_command::sign_challenge,
                        {{"challenge", smp::binary(challenge)}});
  ChallengeAnswer answer;
  answer.signature = smp::get_bytes(rsp, "signature");
  if (rsp.contains("key_attestation")) answer.key_attestation = smp::get_bytes(rsp, "key_attestation");
  return answer;
}

ManufacturingState set_manufacturing_state(SmpClient& client, ManufacturingState next, bool dry_run) {
  auto rsp = call_group(client, smp::Op::write, provisioning_command::set_state,
                        {{"state", std::string(manufacturing_state_name(next))}, {"dry_run", dry_run}});
  return reported_state(client.board(), rsp);
}

ProvisioningRecord read_provisioning_record(SmpClient& client) {
  auto rsp = call_group(client, smp::Op::read, provisioning_command::record);
  ProvisioningRecord record;
  record.uid = smp::get_text(rsp, "uid");
  record.state = reported_state(client.board(), rsp);
  if (rsp.contains("key_origin")) record.key_origin = smp::get_text(rsp, "key_origin");
  if (rsp.contains("public_key")) record.device_public_key = smp::get_bytes(rsp, "public_key");
  record.certificate_chain = bytes_array(rsp, "chain");
  if (rsp.contains("boot_key_hash")) record.config.boot_key_hash = smp::get_bytes(rsp, "boot_key_hash");
  if (rsp.contains("service_url")) record.config.service_url = smp::get_text(rsp, "service_url");
  if (rsp.contains("trust_anchor")) record.config.trust_anchor_pem = smp::get_text(rsp, "trust_anchor");
  read_manifest_trust(rsp, record.config.manifest_keys, record.config.manifest_threshold);
  if (rsp.contains("sequence")) record.sequence = smp::get_uint(rsp, "sequence");
  if (rsp.contains("manifest_digest")) record.manifest_digest = smp::get_bytes(rsp, "manifest_digest");
  if (rsp.contains("encryption_key")) record.encryption_public_key = smp::get_bytes(rsp, "encryption_key");
  return record;
}

InstalledManifest install_manifest(SmpClient& client, ByteView envelope) {
  auto rsp = call_group(client, smp::Op::write, provisioning_command::install_manifest,
                        {{"envelope", smp::binary(envelope)}});
  InstalledManifest installed;
  installed.sequence = smp::get_uint(rsp, "sequence");
  installed.digest = smp::get_bytes(rsp, "digest");
  if (installed.digest.size() != 32)
    throw Error(ExitCode::board, fmt::format("board {} answered install-manifest with a digest of {} bytes",
                                             client.board(), installed.digest.size()));
  return installed;
}

}  // namespace kiln
