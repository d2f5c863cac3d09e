// Session-ticket keys shared by every instance on copies of one --dir, and kept across restarts: a device's
// TLS 1.3 ticket from one instance resumes on any other (behind a load balancer) and after a restart, instead
// of a full handshake for the whole fleet at once.
//
// One 32-byte secret (DIR/ticket-key, 0600, written by kiln-service init, or by the first run of an older
// directory). Each hour has its own keys, derived from the secret with HKDF-SHA256: a 16-byte key name, an
// AES-256-CBC key and an HMAC-SHA256 key, as RFC 5077 tickets use them. New tickets are sealed with the
// current hour's keys; a ticket sealed in the previous `accepted_hours` − 1 hours still opens (a ticket lives
// 2 hours, and is renewed past half of it). Replacing the file on every instance makes every ticket issued before it useless.
// The accepted hours' keys are derived once, when an hour begins, and shared by every handshake of that hour.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>

#include <openssl/ssl.h>

#include "core/bytes.hpp"

namespace kiln::service {

class TicketKeys {
 public:
  static constexpr std::int64_t hour_seconds = 3600;
  static constexpr std::int64_t accepted_hours = 3;

  struct Keys {
    std::array<unsigned char, 16> name{};
    std::array<unsigned char, 32> cipher_key{};
    std::array<unsigned char, 32> mac_key{};
  };

  explicit TicketKeys(Bytes secret);
  TicketKeys(const TicketKeys&) = delete;
  TicketKeys& operator=(const TicketKeys&) = delete;
  // DIR/ticket-key, created (0600) when absent; refused when others may read it.
  static std::shared_ptr<const TicketKeys> load_or_create(const std::filesystem::path& path);
  // The keys of the hour that holds Unix time `at`, derived afresh.
  Keys keys_at(std::int64_t at) const;
  // The keys new tickets are sealed with at `now`: the current hour's (from the cache).
  Keys sealing_keys(std::int64_t now) const;
  // The keys a ticket named `name` was sealed with, if it was sealed in the accepted hours before `now`; and
  // whether they are the current hour's (from the cache).
  std::optional<std::pair<Keys, bool>> find(const unsigned char* name, std::int64_t now) const;
  // For tests: how many hours' keys were derived for the cache.
  std::uint64_t derivations() const { return derivations_; }
  // From now on ctx seals and opens tickets with these keys (`this` must outlive ctx).
  void attach(SSL_CTX* ctx) const;

 private:
  static int on_ticket_key(SSL* ssl, unsigned char* name, unsigned char* iv, EVP_CIPHER_CTX* cipher,
                           EVP_MAC_CTX* mac, int encrypt);
  // The accepted hours' keys up to `hour`: keys[back] are hour − back's.
  struct Window {
    std::int64_t hour = 0;
    std::array<Keys, accepted_hours> keys;
  };
  std::shared_ptr<const Window> window_at(std::int64_t now) const;

  Bytes secret_;
  // The newest hour's window (the callback runs on every server thread at once): a handshake copies the pointer
  // under the lock; the first one of a new hour derives that hour's keys and keeps the previous hours' ones.
  // `earlier_` is the last window asked for an hour before the newest: the previous hour's, for a handshake that
  // read the clock just before the hour turned, or the one a clock stepped back reads, derived once, not on
  // every handshake until the clock catches up with `window_`.
  mutable std::mutex mutex_;
  mutable std::shared_ptr<const Window> window_;
  mutable std::shared_ptr<const Window> earlier_;
  mutable std::atomic<std::uint64_t> derivations_{0};
};

}  // namespace kiln::service
