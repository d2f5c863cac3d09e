// Station ledger: an append-only, hash-chained SQLite (WAL) log of provisioning attempts, sealed by
// signed checkpoints; verify, export as a signed JSON-lines bundle, statistics and the quota.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "provisioning/status.hpp"
#include "signing/ledger_signature.hpp"
#include "signing/signer.hpp"

namespace kiln::sqlite {
class Db;
}

namespace kiln {

// One step of one attempt, as the ledger keeps it.
struct StepResult {
  std::string step;
  StepStatus result = StepStatus::ok;
  std::int64_t duration_ms = 0;
  std::string error;
};

// One provisioning attempt on one unit.
struct LedgerEntry {
  std::string uid;
  BoardStatus result = BoardStatus::failed;  // provisioned or failed (the ledger keeps attempts only)
  std::string failed_step;
  std::string error;
  std::string device_public_key_pem;
  std::string encryption_public_key_pem;  // the board's image-encryption key (encryption-key step), PEM
  std::string certificate_pem;
  std::string certificate_serial;  // hex, empty when no certificate was issued in this attempt
  bool certificate_issued = false;  // issued by this attempt (counts against the quota)
  std::string product;
  std::string profile_hash;
  std::string station_id;
  std::string operator_name;
  std::string final_state;
  std::string firmware_version;  // firmware step: the image the board runs (empty without one)
  std::string firmware_sha256;   // hex SHA-256 of the image file
  std::optional<std::uint64_t> manifest_sequence;  // the SUIT sequence number the board recorded
  bool reprovision = false;     // an operator re-provisioned a UID this station had certified (--reprovision)
  std::string replaces_serial;  // the certificate (hex serial) the re-provisioning supersedes
  std::string started_at;   // ISO 8601 UTC
  std::string finished_at;
  std::vector<StepResult> steps;
};
nlohmann::json to_json(const LedgerEntry& entry);
LedgerEntry ledger_entry_from_json(const nlohmann::json& content);

struct LedgerVerifyReport {
  std::int64_t rows = 0;
  std::int64_t units = 0;
  std::int64_t checkpoints = 0;
  std::int64_t unsealed_rows = 0;    // rows after the last checkpoint (or station row)
  std::int64_t unverified_rows = 0;  // rows no signature covers (unbound ledgers: rows after the last checkpoint)
  std::int64_t reprovisions = 0;     // unit rows recording an explicit --reprovision
  std::string ledger_id;             // from the station row; empty for a ledger bound to no station
  bool head_verified = false;        // the signed head names the last row: nothing was cut from the end
  bool ok = true;
  std::optional<std::int64_t> bad_row;  // sequence number of the first bad row
  std::string problem;
};

struct LedgerStats {
  std::int64_t attempts = 0;
  std::int64_t failed_attempts = 0;
  std::int64_t units_attempted = 0;
  std::int64_t units_provisioned = 0;
  std::int64_t certificates_issued = 0;
  std::int64_t certificates_reserved = 0;  // being issued now, or left by a killed station (see quota)
  double yield = 0;                // units provisioned / units attempted
  double units_per_hour = 0;       // between the first start and the last finish
  std::vector<std::pair<std::string, std::int64_t>> failures_per_step;
};

// The signed head (empty fields when the ledger has none).
struct LedgerHead {
  std::string ledger_id;
  std::int64_t rows = 0;
  std::string hash;
  std::string signature;  // hex, station key over ledger_head_message(ledger_id, rows, hash)
};

class Ledger {
 public:
  // Opens or creates the ledger database (WAL, synchronous=FULL so a committed row survives power loss).
  explicit Ledger(const std::filesystem::path& path);
  ~Ledger();
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  // Appends one attempt row and commits it durably; returns its sequence number. When
  // `checkpoint_every` > 0 and a signer is set, a signed checkpoint follows every N unit rows.
  std::int64_t append(const LedgerEntry& entry);
  // Signs the chain head unless the last row already is a checkpoint.
  void checkpoint();
  // Binds the ledger to the station key: a new ledger (or one written before station rows) gets a
  // signed `station` row naming the key; a ledger bound to (or checkpointed by) another key is
  // refused with Error(conflict) saying how to choose another ledger. Every append needs it: each
  // one re-signs the ledger head.
  void set_station_signer(const Signer* signer, int checkpoint_every);
  // The key the ledger is bound to (its station row, else its checkpoints), if any.
  std::optional<Bytes> station_public_key();

  // Quota, shared by every process using this ledger file: reserves one certificate for `uid`
  // inside an SQLite BEGIN IMMEDIATE transaction (throws Error(conflict) when `quota` certificates
  // are issued or reserved by other UIDs). The reservation is a row in the database: appending the
  // unit's row consumes it in the same transaction, release_certificate() drops it when nothing
  // was issued, and one left by a killed station keeps counting until that UID is provisioned again.
  void reserve_certificate(const std::string& uid, std::optional<std::int64_t> quota);
  void release_certificate(const std::string& uid);
  std::int64_t certificates_issued();
  std::int64_t certificates_reserved();
  // Whether any unit row records the certificate with this serial (hex).
  bool records_certificate(const std::string& serial);

  // The newest successful entry for a UID, if any.
  std::optional<LedgerEntry> latest_provisioned(const std::string& uid);
  // The newest certificate (PEM) any attempt recorded for a UID.
  std::optional<std::string> latest_certificate(const std::string& uid);

  // `station_public_key`: DER SPKI the checkpoints must be signed with (empty: accept the key the
  // checkpoints name, which only proves integrity, not origin).
  LedgerVerifyReport verify(ByteView station_public_key);
  LedgerHead head();
  // Writes the units (newest successful row per UID) as JSON lines and a signed trailer line.
  // Returns the number of units.
  std::int64_t export_bundle(const std::filesystem::path& out, const Signer& station_signer);
  LedgerStats stats();

 private:
  std::int64_t append_row(const std::string& kind, const std::string& content, const Signer* sign_with,
                         const std::string& consume_reservation = {});
  // Inside an open transaction: the row and the re-signed head.
  std::int64_t insert_row(const std::string& kind, const std::string& content, const Signer* sign_with);
  std::unique_ptr<sqlite::Db> db_;
  std::string path_;
  std::string ledger_id_;
  std::mutex mutex_;
  const Signer* signer_ = nullptr;
  int checkpoint_every_ = 0;
  int rows_since_checkpoint_ = 0;
};

// SHA-256 chain link: hex of SHA-256(prev_hash "\n" seq "\n" kind "\n" content).
std::string ledger_row_hash(const std::string& prev_hash, std::int64_t seq, const std::string& kind,
                            const std::string& content);

// Refuses (exit 3) a ledger that failed verification, and one whose end no signature proves (no station
// row and no signed head, or no rows at all) unless `allow_unverified`: rows cut from its end could not be
// detected. What `factory ledger verify` and `export` require before they report or export anything.
void require_provable(const LedgerVerifyReport& report, const std::filesystem::path& ledger, bool allow_unverified);

}  // namespace kiln
