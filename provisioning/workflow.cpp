// Provisioning workflow: attest -> identity -> certificate -> install -> ledger -> final state.
#include "provisioning/workflow.hpp"

#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "core/device_uid.hpp"
#include "core/files.hpp"
#include "core/interrupt.hpp"
#include "core/time.hpp"
#include "provisioning/station_ca.hpp"
#include "signing/file_key.hpp"
#include "signing/image_crypto.hpp"
#include "signing/openssl_ptr.hpp"
#include "transport/board_api.hpp"
#include "transport/smp_client.hpp"

namespace kiln {

namespace {

using Clock = std::chrono::steady_clock;

std::int64_t millis_since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

// A P-256 device key made in station memory for `inject` mode: returns the public SPKI and the
// key wrapped to the board's transport key. The PKCS#8 plaintext is wiped before returning.
std::pair<Bytes, WrappedKey> make_injected_key(const BoardIdentity& identity) {
  ossl::Ptr<EVP_PKEY> key(EVP_EC_gen("P-256"));
  if (!key) throw Error(ExitCode::failure, "cannot generate a P-256 device key").with_detail(openssl_errors());
  std::unique_ptr<PKCS8_PRIV_KEY_INFO, decltype(&PKCS8_PRIV_KEY_INFO_free)> info(EVP_PKEY2PKCS8(key.get()),
                                                                                  PKCS8_PRIV_KEY_INFO_free);
  unsigned char* der = nullptr;
  int der_length = info ? i2d_PKCS8_PRIV_KEY_INFO(info.get(), &der) : -1;
  if (der_length <= 0) throw Error(ExitCode::failure, "cannot encode the device key").with_detail(openssl_errors());
  WrappedKey wrapped;
  try {
    wrapped = wrap_device_key(identity.transport_key, identity.uid, ByteView(der, static_cast<std::size_t>(der_length)));
  } catch (...) {
    OPENSSL_clear_free(der, static_cast<std::size_t>(der_length));
    throw;
  }
  OPENSSL_clear_free(der, static_cast<std::size_t>(der_length));
  int spki_length = i2d_PUBKEY(key.get(), nullptr);
  Bytes spki(static_cast<std::size_t>(spki_length));
  unsigned char* p = spki.data();
  i2d_PUBKEY(key.get(), &p);
  return {spki, wrapped};
}

Bytes fresh_nonce() {
  Bytes nonce(32);
  if (RAND_bytes(nonce.data(), static_cast<int>(nonce.size())) != 1)
    throw Error(ExitCode::failure, "no randomness for a board challenge");
  return nonce;
}

// Proof that the board holds the private half of `public_key` (resuming without a fresh CSR), and
// that the attested secure element vouches for that key.
void check_possession(SmpClient& client, const BoardIdentity& identity, const Bytes& public_key) {
  Bytes challenge = fresh_nonce();
  auto answer = sign_challenge_attested(client, challenge);
  bool signed_ok = false;
  try {
    signed_ok = verify_signature(public_key, digest(HashAlg::sha256, challenge), HashAlg::sha256, answer.signature);
  } catch (const Error&) {
  }
  if (!signed_ok)
    throw Error(ExitCode::verification_failed,
                fmt::format("board {}: cannot prove it holds the device key it reports", identity.uid));
  verify_key_attestation(identity, challenge, public_key, answer.key_attestation);
}

// A UID as it may appear in a message: JSON-escaped (no control characters reach a terminal), cut short.
std::string shown_uid(const std::string& uid) {
  std::string text = nlohmann::json(uid.substr(0, 80)).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
  return uid.size() > 80 ? text + "..." : text;
}

// Two boards reporting one UID in this station at the same time: only the first goes on.
class InFlight {
 public:
  InFlight(Station& station, const std::string& uid) : station_(station), uid_(uid) {
    std::lock_guard lock(station.in_flight_mutex);
    if (!station.in_flight.insert(uid).second)
      throw Error(ExitCode::conflict,
                  fmt::format("board {} is already being provisioned on another port of this station: two boards "
                              "report the same UID",
                              uid),
                  "one of them is a clone or a proxy: set both aside and check their attestation");
  }
  ~InFlight() {
    std::lock_guard lock(station_.in_flight_mutex);
    station_.in_flight.erase(uid_);
  }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  Station& station_;
  std::string uid_;
};

// After a reset the board reboots (MCUboot swaps) and the link drops: connect again and wait until
// the board answers (a USB board re-enumerates, so the first device found may be the old one).
void reconnect_after_reset(SmpClient& client, const BoardAddress& board, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + 2 * timeout;
  for (;;) {
    try {
      client.reconnect(open_link(board));
      read_mcumgr_params(client);
      return;
    } catch (const Error&) {
      if (Clock::now() >= deadline) throw;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

const ImageSlot* find_slot(const std::vector<ImageSlot>& slots, std::uint32_t slot) {
  for (const auto& s : slots)
    if (s.image == 0 && s.slot == slot) return &s;
  return nullptr;
}

bool config_matches(const ServiceConfig& have, const Station& station) {
  const auto& p = station.profile;
  return have.boot_key_hash == station.boot_key_hash && have.trust_anchor_pem == station.trust_anchor_pem &&
         (!p.service_url || have.service_url == p.service_url);
}

// One attempt's working state: the facts read from the board and what this attempt produced.
struct Attempt {
  Station& station;
  const BoardAddress& board;
  const ProvisionOptions& options;
  const EventSink& on_event;
  ProvisionOutcome outcome;
  LedgerEntry entry;
  BoardIdentity identity;
  ProvisioningRecord record;
  Bytes device_public_key;
  Bytes certificate_der;
  bool reserved_certificate = false;
  std::unique_ptr<InFlight> in_flight;

  // Runs `body` as `step`: it returns ok or skipped (or would_run in a dry run).
  template <typename Body>
  void step(ProvisionStep which, Body&& body) {
    auto start = Clock::now();
    ProvisionEvent event{board.text(), identity.uid, std::string(provision_step_name(which)), StepStatus::ok, 0, ""};
    try {
      event.result = body();
      event.uid = identity.uid;
    } catch (const Error& e) {
      event.uid = identity.uid;
      event.result = StepStatus::failed;
      event.error = e.what();
      event.duration_ms = millis_since(start);
      entry.steps.push_back({event.step, event.result, event.duration_ms, event.error});
      if (on_event) on_event(event);
      outcome.failed_step = event.step;
      throw;
    }
    event.duration_ms = millis_since(start);
    entry.steps.push_back({event.step, event.result, event.duration_ms, ""});
    if (event.result == StepStatus::would_run) outcome.planned_steps.push_back(event.step);
    if (on_event) on_event(event);
  }
};

// A UID this station already certified gets a second certificate only when the operator says so
// (--reprovision); the row then records it. A board that holds the recorded key is a resume.
void check_second_certificate(Attempt& a) {
  auto earlier = a.station.ledger->latest_certificate(a.identity.uid);
  if (!earlier) return;
  Bytes der = certificate_der_from_pem(*earlier);
  const Bytes& key = a.record.device_public_key;
  if (!key.empty() && certificate_matches(der, a.station.ca_certificate_der, key)) return;
  std::string serial = certificate_serial_hex(der);
  if (!a.options.reprovision)
    throw Error(ExitCode::conflict,
                fmt::format("board {} already has a certificate from this station (serial {}), and the board does not "
                            "hold its key: a second certificate for one UID needs an explicit --reprovision",
                            a.identity.uid, serial),
                "if this really is the same unit (e.g. its secure element was replaced), run the command again with "
                "--reprovision; a board that merely claims this UID is a clone: set it aside");
  a.entry.reprovision = true;
  a.entry.replaces_serial = serial;
}

// The last look before the irreversible step: no step of this attempt failed, and the board reads
// back the identity, certificate, configuration (and firmware) this attempt installed. A write the
// board acknowledged but did not keep (flash fault, a proxy, buggy firmware) stops the seal here.
void check_ready_to_seal(Attempt& a, SmpClient& client) {
  for (const auto& step : a.entry.steps)
    if (step.result == StepStatus::failed)
      throw Error(ExitCode::failure, fmt::format("board {}: step {} failed in this attempt: not sealing it",
                                                 a.identity.uid, step.step));
  const Station& station = a.station;
  auto record = read_provisioning_record(client);
  std::vector<std::string> missing;
  if (record.uid != a.identity.uid) missing.push_back("the same UID");
  if (record.device_public_key.empty() || record.device_public_key != a.device_public_key)
    missing.push_back("the device key");
  if (record.certificate_chain.empty() || record.certificate_chain.front() != a.certificate_der)
    missing.push_back("the device certificate");
  if (!config_matches(record.config, station)) missing.push_back("the service configuration");
  if (station.firmware) {
    const auto& fw = *station.firmware;
    auto slots = read_image_state(client);
    const ImageSlot* primary = find_slot(slots, 0);
    if (!primary || !fw.is_image(primary->hash) || !primary->confirmed) missing.push_back("the confirmed firmware");
    if (record.config.manifest_keys != fw.manifest_keys || record.config.manifest_threshold != fw.manifest_threshold ||
        record.manifest_digest != fw.manifest_digest)
      missing.push_back("the firmware manifest");
  }
  if (!missing.empty())
    throw Error(ExitCode::board,
                fmt::format("board {} does not read back {} this attempt installed: not sealing it", a.identity.uid,
                            fmt::join(missing, ", ")),
                "run again (the missing step is redone); if it recurs the board does not keep what it acknowledges: "
                "set it aside");
}

void run_steps(Attempt& a, SmpClient& client) {
  Station& station = a.station;
  const auto& profile = station.profile;
  bool dry = a.options.dry_run;
  auto change = [dry](auto&& action) -> StepStatus {
    if (dry) return StepStatus::would_run;
    action();
    return StepStatus::ok;
  };

  a.step(ProvisionStep::attest, [&] {
    Bytes nonce = fresh_nonce();
    a.identity = read_identity(client, nonce);
    // The service's UID alphabet, before the UID goes anywhere (ledger, messages, certificate).
    if (!is_device_uid(a.identity.uid)) {
      std::string shown = shown_uid(a.identity.uid);
      a.identity.uid.clear();
      throw Error(ExitCode::board,
                  fmt::format("board {} reports UID {}, which is not a device UID ({})", a.board.text(), shown,
                              device_uid_alphabet),
                  "the board's identity is malformed: set it aside; nothing was written to it");
    }
    a.outcome.uid = a.entry.uid = a.identity.uid;
    verify_attestation(a.identity, station.vendor_root_der, nonce);
    a.in_flight = std::make_unique<InFlight>(station, a.identity.uid);
    a.record = read_provisioning_record(client);
    if (a.record.uid != a.identity.uid)
      throw Error(ExitCode::board, fmt::format("board {} reports UID {} in its provisioning record", a.identity.uid,
                                               shown_uid(a.record.uid)));
    if (a.identity.state < profile.final_state) check_second_certificate(a);
    return StepStatus::ok;
  });

  if (a.identity.state >= profile.final_state) {
    if (!station.ledger->latest_provisioned(a.identity.uid))
      throw Error(ExitCode::conflict,
                  fmt::format("board {} is already {} but this station's ledger has no record of it",
                              a.identity.uid, manufacturing_state_name(a.identity.state)),
                  "it was provisioned by another station or with another ledger");
    a.outcome.result = BoardStatus::already_provisioned;
    return;
  }

  // Before the firmware step: an encrypted factory image needs the key to boot.
  if (profile.encryption) {
    const auto& enc = *profile.encryption;
    a.step(ProvisionStep::encryption_key, [&]() -> StepStatus {
      std::optional<Bytes> product_public;
      if (enc.mode == EncryptionKeyMode::install) product_public = mcuboot::load_encryption_key(enc.key.string()).public_key_der;
      const Bytes& held = a.record.encryption_public_key;
      if (!held.empty() && (!product_public || held == *product_public)) {
        a.entry.encryption_public_key_pem = public_key_pem(held);
        return StepStatus::skipped;
      }
      if (a.identity.state != ManufacturingState::blank)
        throw Error(ExitCode::conflict,
                    fmt::format("board {} is {} and holds {} image-encryption key", a.identity.uid,
                                manufacturing_state_name(a.identity.state), held.empty() ? "no" : "another"));
      if (dry) return StepStatus::would_run;
      Bytes installed;
      if (enc.mode == EncryptionKeyMode::generate) {
        installed = generate_encryption_key(client, enc.type);
        (void)mcuboot::encryption_key_from_spki(installed, "the board's image-encryption key");
      } else {
        auto key = load_private_key_file(enc.key, std::nullopt);
        int length = i2d_PrivateKey(key.get(), nullptr);
        if (length <= 0) throw Error(ExitCode::usage, fmt::format("{}: cannot encode the private key", enc.key.string()));
        Bytes pkcs8(static_cast<std::size_t>(length));
        unsigned char* out = pkcs8.data();
        i2d_PrivateKey(key.get(), &out);
        WrappedKey wrapped = wrap_device_key(a.identity.transport_key, a.identity.uid, pkcs8);
        OPENSSL_cleanse(pkcs8.data(), pkcs8.size());
        installed = inject_encryption_key(client, wrapped);
        if (installed != *product_public)
          throw Error(ExitCode::verification_failed,
                      fmt::format("board {} reports a different image-encryption key than the one installed",
                                  a.identity.uid));
      }
      a.entry.encryption_public_key_pem = public_key_pem(installed);
      return StepStatus::ok;
    });
  }

  if (station.firmware) {
    const auto& fw = *station.firmware;
    a.step(ProvisionStep::firmware, [&]() -> StepStatus {
      auto slots = read_image_state(client);
      const ImageSlot* primary = find_slot(slots, 0);
      bool running = primary && fw.is_image(primary->hash);
      bool key_installed = a.record.config.manifest_keys == fw.manifest_keys &&
                           a.record.config.manifest_threshold == fw.manifest_threshold;
      bool manifest_installed = a.record.manifest_digest == fw.manifest_digest;
      if (running && primary->confirmed && key_installed && manifest_installed) return StepStatus::skipped;
      if (dry) return StepStatus::would_run;
      if (!running) {
        // Upload unless the secondary slot already holds it (resumes a partial upload), test it,
        // reset so MCUboot swaps it in, and check the board now runs it.
        const ImageSlot* staged = find_slot(slots, 1);
        if (!staged || !fw.is_image(staged->hash)) {
          upload_image(client, fw.image, UploadOptions{});
          slots = read_image_state(client);
          staged = find_slot(slots, 1);
          if (!staged || !fw.is_image(staged->hash))
            throw Error(ExitCode::board, fmt::format("board {} does not list the uploaded image in its secondary slot",
                                                     a.identity.uid));
        }
        write_image_state(client, staged->hash, false);
        reset_board(client);
        reconnect_after_reset(client, a.board, a.options.board_timeout);
        slots = read_image_state(client);
        primary = find_slot(slots, 0);
        if (!primary || !fw.is_image(primary->hash))
          throw Error(ExitCode::board,
                      fmt::format("board {} did not boot firmware {} after the reset (it runs {})", a.identity.uid,
                                  fw.version, primary ? primary->version : "nothing"),
                      "run again: the image stays in the secondary slot and is marked again");
      }
      if (!primary->confirmed) write_image_state(client, {}, true);
      if (!key_installed) {
        ServiceConfig config;
        config.manifest_keys = fw.manifest_keys;
        config.manifest_threshold = fw.manifest_threshold;
        install_service_config(client, config);
      }
      if (!manifest_installed) {
        auto installed = install_manifest(client, fw.manifest);
        if (installed.sequence != fw.sequence || installed.digest != fw.manifest_digest)
          throw Error(ExitCode::board, fmt::format("board {} recorded manifest sequence {} (digest {}), not {}",
                                                   a.identity.uid, installed.sequence, to_hex(installed.digest),
                                                   fw.sequence));
      }
      return StepStatus::ok;
    });
    a.entry.firmware_version = fw.version;
    a.entry.firmware_sha256 = to_hex(fw.image_sha256);
    a.entry.manifest_sequence = fw.sequence;
  }

  bool blank = a.identity.state == ManufacturingState::blank;

  a.step(ProvisionStep::identity, [&]() -> StepStatus {
    if (!a.record.device_public_key.empty()) {
      a.device_public_key = a.record.device_public_key;
      if (!dry) check_possession(client, a.identity, a.device_public_key);
      return StepStatus::skipped;
    }
    if (!blank)
      throw Error(ExitCode::conflict, fmt::format("board {} is {} but holds no device key", a.identity.uid,
                                                  manufacturing_state_name(a.identity.state)));
    return change([&] {
      if (profile.identity == IdentityMode::csr) {
        Bytes nonce = fresh_nonce();
        auto generated = generate_attested_device_key(client, a.identity.uid, nonce);
        a.device_public_key = verify_csr(generated.csr);
        verify_key_attestation(a.identity, nonce, a.device_public_key, generated.key_attestation);
      } else {
        auto [public_key, wrapped] = make_injected_key(a.identity);
        Bytes installed = inject_device_key(client, wrapped);
        if (installed != public_key)
          throw Error(ExitCode::verification_failed,
                      fmt::format("board {} reports a different key than the one injected", a.identity.uid));
        a.device_public_key = public_key;
      }
    });
  });
  if (dry) {
    // Nothing below can be judged without a key; report what would run.
    for (auto step : {ProvisionStep::certificate, ProvisionStep::install_chain, ProvisionStep::install_config,
                      ProvisionStep::ledger, ProvisionStep::final_state})
      a.step(step, [&]() -> StepStatus {
        if (step == ProvisionStep::certificate || step == ProvisionStep::install_chain) {
          const auto& chain = a.record.certificate_chain;
          if (!chain.empty() && certificate_matches(chain.front(), station.ca_certificate_der, a.device_public_key))
            return StepStatus::skipped;
        }
        if (step == ProvisionStep::install_config && config_matches(a.record.config, station)) return StepStatus::skipped;
        return StepStatus::would_run;
      });
    a.outcome.result = BoardStatus::dry_run;
    return;
  }

  a.step(ProvisionStep::certificate, [&]() -> StepStatus {
    const auto& chain = a.record.certificate_chain;
    if (!chain.empty() && certificate_matches(chain.front(), station.ca_certificate_der, a.device_public_key)) {
      a.certificate_der = chain.front();
      // Issued by a station killed before it could record it: count it against the quota now.
      if (!station.ledger->records_certificate(certificate_serial_hex(a.certificate_der)))
        a.entry.certificate_issued = true;
      return StepStatus::skipped;
    }
    // A certificate an earlier attempt issued (and recorded) for this very key is reused.
    if (auto earlier = station.ledger->latest_certificate(a.identity.uid)) {
      Bytes der = certificate_der_from_pem(*earlier);
      if (certificate_matches(der, station.ca_certificate_der, a.device_public_key)) {
        a.certificate_der = der;
        return StepStatus::skipped;
      }
    }
    if (!blank) throw Error(ExitCode::conflict, fmt::format("board {} is locked without a certificate", a.identity.uid));
    station.ledger->reserve_certificate(a.identity.uid, profile.quota);
    a.reserved_certificate = true;
    auto issued = issue_device_certificate(*station.ca, station.ca_certificate_der, a.device_public_key, a.identity.uid,
                                           {profile.product, profile.validity_days});
    a.certificate_der = issued.der;
    a.entry.certificate_issued = true;
    return StepStatus::ok;
  });
  a.entry.device_public_key_pem = public_key_pem(a.device_public_key);
  a.entry.certificate_pem = certificate_pem(a.certificate_der);
  a.entry.certificate_serial = a.outcome.certificate_serial = certificate_serial_hex(a.certificate_der);

  a.step(ProvisionStep::install_chain, [&]() -> StepStatus {
    const auto& chain = a.record.certificate_chain;
    if (!chain.empty() && chain.front() == a.certificate_der) return StepStatus::skipped;
    install_certificate_chain(client, {a.certificate_der, station.ca_certificate_der});
    return StepStatus::ok;
  });

  a.step(ProvisionStep::install_config, [&]() -> StepStatus {
    if (config_matches(a.record.config, station)) return StepStatus::skipped;
    ServiceConfig config;
    config.boot_key_hash = station.boot_key_hash;
    config.service_url = profile.service_url;
    config.trust_anchor_pem = station.trust_anchor_pem;
    install_service_config(client, config);
    return StepStatus::ok;
  });

  // Durable before anything irreversible: a board never reaches its final state unrecorded, and
  // never on faith: it must hold now exactly what this attempt established.
  a.step(ProvisionStep::ledger, [&] {
    check_ready_to_seal(a, client);
    a.entry.result = BoardStatus::provisioned;
    a.entry.finished_at = now_iso8601_millis();
    station.ledger->append(a.entry);
    return StepStatus::ok;
  });
  a.entry.certificate_issued = false;  // counted once, in the row just written

  a.step(ProvisionStep::final_state, [&] {
    set_manufacturing_state(client, profile.final_state, false);
    return StepStatus::ok;
  });
  a.outcome.result = BoardStatus::provisioned;
}

// One signing operation at a time: a PKCS#11 session must not be used by two threads at once,
// and the CA key may also sign ledger checkpoints.
class SerializedSigner : public Signer {
 public:
  explicit SerializedSigner(std::unique_ptr<Signer> inner) : inner_(std::move(inner)) {}
  KeyType type() const override { return inner_->type(); }
  Bytes public_key_der() const override { return inner_->public_key_der(); }
  std::string description() const override { return inner_->description(); }
  Bytes sign(ByteView input, HashAlg hash) const override {
    std::lock_guard lock(mutex_);
    return inner_->sign(input, hash);
  }

 private:
  std::unique_ptr<Signer> inner_;
  mutable std::mutex mutex_;
};

}  // namespace

std::string_view provision_step_name(ProvisionStep step) {
  switch (step) {
    case ProvisionStep::attest: return "attest";
    case ProvisionStep::encryption_key: return "encryption-key";
    case ProvisionStep::firmware: return "firmware";
    case ProvisionStep::identity: return "identity";
    case ProvisionStep::certificate: return "certificate";
    case ProvisionStep::install_chain: return "install-chain";
    case ProvisionStep::install_config: return "install-config";
    case ProvisionStep::ledger: return "ledger";
    case ProvisionStep::final_state: return "final-state";
  }
  return "unknown";
}

std::unique_ptr<Station> open_station(const std::filesystem::path& profile_path, const KeyOptions& key_options,
                                      const std::string& operator_name) {
  auto station = std::make_unique<Station>();
  station->profile = read_profile(profile_path);
  station->profile_hash = profile_hash(profile_path);
  station->operator_name = operator_name;
  const auto& p = station->profile;
  station->ca = std::make_unique<SerializedSigner>(open_signer(p.ca_key, key_options));
  if (p.station_key != p.ca_key)
    station->station_signer = std::make_unique<SerializedSigner>(open_signer(p.station_key, key_options));
  station->ca_certificate_der = read_certificate_file(p.ca_certificate.string());
  station->vendor_root_der = read_certificate_file(p.vendor_root.string());
  station->trust_anchor_pem = certificate_pem(read_certificate_file(p.trust_anchor.string()));
  station->boot_key_hash = from_hex(p.boot_key_hash);
  if (p.firmware) {
    // The files must still be the ones init checked (the profile hash covers these digests).
    for (const auto& [path, pinned] : {std::pair{p.firmware->image, p.firmware->image_sha256},
                                       std::pair{p.firmware->manifest, p.firmware->manifest_sha256}}) {
      auto actual = to_hex(file_sha256(path));
      if (actual != pinned)
        throw Error(ExitCode::verification_failed,
                    fmt::format("{} changed since the profile was written (sha256 {}, the profile says {})",
                                path.string(), actual, pinned),
                    "run kiln factory init again for new firmware");
    }
    std::vector<Bytes> manifest_keys;
    for (const auto& key : p.firmware->manifest_keys) manifest_keys.push_back(from_hex(key));
    station->firmware = check_firmware(p.firmware->image, p.firmware->manifest, manifest_keys,
                                       p.firmware->manifest_threshold, std::nullopt);
  }
  station->ledger = std::make_unique<Ledger>(p.ledger);
  station->ledger->set_station_signer(station->station_signer ? station->station_signer.get() : station->ca.get(),
                                      p.checkpoint_every);
  return station;
}

ProvisionOutcome provision_board(Station& station, const BoardAddress& board, const ProvisionOptions& options,
                                 const EventSink& on_event) {
  auto start = Clock::now();
  Attempt a{station, board, options, on_event, {}, {}, {}, {}, {}, {}, false, nullptr};
  a.outcome.board = board.text();
  a.entry.product = station.profile.product;
  a.entry.profile_hash = station.profile_hash;
  a.entry.station_id = station.profile.station_id;
  a.entry.operator_name = station.operator_name;
  a.entry.final_state = std::string(manufacturing_state_name(station.profile.final_state));
  a.entry.started_at = now_iso8601_millis();
  try {
    SmpClient client(open_link(board), SmpClientOptions{options.board_timeout, 2, 8});
    run_steps(a, client);
  } catch (const Error& e) {
    a.outcome.result = BoardStatus::failed;
    a.outcome.error = e.what();
    a.outcome.code = e.code();
    if (a.outcome.failed_step.empty()) a.outcome.failed_step = "connect";
  } catch (const std::exception& e) {
    a.outcome.result = BoardStatus::failed;
    a.outcome.error = e.what();
    a.outcome.code = ExitCode::failure;
    if (a.outcome.failed_step.empty()) a.outcome.failed_step = "connect";
  }
  // Failed attempts are recorded too (yield and failures per step), when the board said who it is.
  if (a.outcome.result == BoardStatus::failed && !options.dry_run && !a.entry.uid.empty()) {
    a.entry.result = BoardStatus::failed;
    a.entry.failed_step = a.outcome.failed_step;
    a.entry.error = a.outcome.error;
    a.entry.finished_at = now_iso8601_millis();
    if (!a.certificate_der.empty() && a.entry.certificate_pem.empty()) {
      a.entry.certificate_pem = certificate_pem(a.certificate_der);
      a.entry.certificate_serial = certificate_serial_hex(a.certificate_der);
      a.entry.device_public_key_pem = public_key_pem(a.device_public_key);
    }
    try {
      station.ledger->append(a.entry);
    } catch (const Error& e) {
      a.outcome.error += fmt::format(" (and the failed attempt could not be recorded: {})", e.what());
    }
  }
  // A certificate issued but not recorded (the row could not be written) keeps its reservation:
  // it exists, so it keeps counting against the quota until this UID is provisioned again.
  bool issued_unrecorded = a.entry.certificate_issued && a.outcome.result == BoardStatus::failed;
  if (a.reserved_certificate && !issued_unrecorded) {
    try {
      station.ledger->release_certificate(a.identity.uid);
    } catch (const Error&) {
    }
  }
  a.outcome.duration_ms = millis_since(start);
  return a.outcome;
}

std::vector<ProvisionOutcome> provision_boards(Station& station, const std::vector<BoardAddress>& boards, int jobs,
                                               const ProvisionOptions& options, const EventSink& on_event) {
  std::vector<ProvisionOutcome> outcomes(boards.size());
  std::atomic<std::size_t> next{0};
  auto worker = [&] {
    for (std::size_t i = next++; i < boards.size(); i = next++) {
      if (interrupted()) {
        outcomes[i].board = boards[i].text();
        outcomes[i].result = BoardStatus::failed;
        outcomes[i].failed_step = "connect";
        outcomes[i].error = "interrupted before this board was started";
        outcomes[i].code = ExitCode::interrupted;
        continue;
      }
      outcomes[i] = provision_board(station, boards[i], options, on_event);
    }
  };
  std::size_t threads = std::min<std::size_t>(boards.size(), static_cast<std::size_t>(std::max(jobs, 1)));
  std::vector<std::thread> pool;
  for (std::size_t t = 0; t < threads; ++t) pool.emplace_back(worker);
  for (auto& thread : pool) thread.join();
  return outcomes;
}

void require_all_provisioned(const std::vector<ProvisionOutcome>& outcomes) {
  std::vector<const ProvisionOutcome*> failed;
  for (const auto& o : outcomes)
    if (o.result == BoardStatus::failed) failed.push_back(&o);
  if (failed.empty()) return;
  auto name = [](const ProvisionOutcome& o) { return o.uid.empty() ? o.board : o.uid; };
  if (outcomes.size() == 1)
    throw Error(failed.front()->code,
                fmt::format("board {}: {} failed: {}", name(*failed.front()), failed.front()->failed_step,
                            failed.front()->error),
                "run the same command again: completed steps are skipped");
  std::vector<std::string> names;
  for (const auto* o : failed) names.push_back(fmt::format("{} ({})", name(*o), o->failed_step));
  throw Error(ExitCode::partial,
              fmt::format("{} of {} boards failed: {}", failed.size(), outcomes.size(), fmt::join(names, ", ")),
              "run again to resume them; completed steps are skipped");
}

}  // namespace kiln
