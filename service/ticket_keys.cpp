#include "service/ticket_keys.hpp"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstring>
#include <span>

#include "core/error.hpp"
#include "core/time.hpp"
#include "service/secret_file.hpp"
#include "signing/kdf.hpp"

namespace kiln::service {

namespace {

constexpr std::size_t secret_size = 32;

// Where an SSL_CTX keeps its TicketKeys.
int keys_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

}  // namespace

TicketKeys::TicketKeys(Bytes secret) : secret_(std::move(secret)) {
  if (secret_.size() != secret_size)
    throw Error(ExitCode::usage, "the session-ticket secret must be 32 bytes",
                "write a new one (head -c 32 /dev/urandom > ticket-key; chmod 600 ticket-key) and copy it to every "
                "instance on a copy of this directory");
}

std::shared_ptr<const TicketKeys> TicketKeys::load_or_create(const std::filesystem::path& path) {
  return std::make_shared<const TicketKeys>(load_or_create_secret(path, "the session-ticket secret", [] {
    Bytes secret(secret_size);
    if (RAND_bytes(secret.data(), static_cast<int>(secret.size())) != 1)
      throw Error(ExitCode::failure, "cannot draw random bytes for the session-ticket secret");
    return secret;
  }));
}

TicketKeys::Keys TicketKeys::keys_at(std::int64_t at) const {
  auto hour = static_cast<std::uint64_t>(at / hour_seconds);
  Bytes info{'k', 'i', 'l', 'n', ' ', 't', 'i', 'c', 'k', 'e', 't', ' ', 'k', 'e', 'y', 's', ' ', 'v', '1'};
  for (int shift = 56; shift >= 0; shift -= 8) info.push_back(static_cast<std::uint8_t>(hour >> shift));
  Keys keys;
  auto material = hkdf(EVP_sha256(), secret_, info, keys.name.size() + keys.cipher_key.size() + keys.mac_key.size());
  const auto* next = material.data();
  for (auto part : {std::span<unsigned char>(keys.name), std::span<unsigned char>(keys.cipher_key),
                    std::span<unsigned char>(keys.mac_key)}) {
    std::copy_n(next, part.size(), part.begin());
    next += part.size();
  }
  return keys;
}

std::shared_ptr<const TicketKeys::Window> TicketKeys::window_at(std::int64_t now) const {
  std::int64_t hour = now / hour_seconds;
  std::lock_guard lock(mutex_);
  for (const auto& cached : {window_, earlier_})
    if (cached && cached->hour == hour) return cached;
  auto made = std::make_shared<Window>();
  made->hour = hour;
  for (std::int64_t back = 0; back < accepted_hours; ++back) {
    // An hour a cached window holds keeps its keys; only the others are derived.
    auto& keys = made->keys[static_cast<std::size_t>(back)];
    auto held = [&](const std::shared_ptr<const Window>& cached) {
      std::int64_t at = cached ? cached->hour - (hour - back) : -1;
      if (at < 0 || at >= accepted_hours) return false;
      keys = cached->keys[static_cast<std::size_t>(at)];
      return true;
    };
    if (!held(window_) && !held(earlier_)) {
      keys = keys_at((hour - back) * hour_seconds);
      ++derivations_;
    }
  }
  // A new hour replaces the newest window, which stays for the late clock reads of the hour before. An earlier
  // hour (a late read, or a clock stepped back) leaves the newest window in place: the clock comes back to it.
  if (!window_ || hour > window_->hour) {
    earlier_ = window_;
    window_ = made;
  } else {
    earlier_ = made;
  }
  return made;
}

TicketKeys::Keys TicketKeys::sealing_keys(std::int64_t now) const { return window_at(now)->keys[0]; }

std::optional<std::pair<TicketKeys::Keys, bool>> TicketKeys::find(const unsigned char* name, std::int64_t now) const {
  auto window = window_at(now);
  for (std::size_t back = 0; back < window->keys.size(); ++back) {
    const auto& keys = window->keys[back];
    if (std::memcmp(keys.name.data(), name, keys.name.size()) == 0) return std::pair{keys, back == 0};
  }
  return std::nullopt;
}

void TicketKeys::attach(SSL_CTX* ctx) const {
  if (keys_index() < 0 || SSL_CTX_set_ex_data(ctx, keys_index(), const_cast<TicketKeys*>(this)) != 1 ||
      SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, &TicketKeys::on_ticket_key) != 1)
    throw Error(ExitCode::failure, "cannot install the session-ticket keys in the TLS context");
}

// OpenSSL's ticket-key callback: 1 sealed or opened, 2 opened with an older hour's keys, 0 a name none of the
// accepted hours has (a full handshake), -1 an error. Whether an opened ticket is renewed is decided by its age
// (issue_tickets_sparingly): three accepted hours outlast a ticket's two-hour lifetime.
int TicketKeys::on_ticket_key(SSL* ssl, unsigned char* name, unsigned char* iv, EVP_CIPHER_CTX* cipher,
                              EVP_MAC_CTX* mac, int encrypt) {
  const auto* self = static_cast<const TicketKeys*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), keys_index()));
  if (!self) return -1;
  auto now = unix_now();
  std::optional<std::pair<Keys, bool>> found;
  if (encrypt) {
    found.emplace(self->sealing_keys(now), true);
    std::memcpy(name, found->first.name.data(), found->first.name.size());
    if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1) return -1;
  } else {
    found = self->find(name, now);
    if (!found) return 0;
  }
  auto& [keys, current] = *found;
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_construct_end()};
  if (EVP_MAC_init(mac, keys.mac_key.data(), keys.mac_key.size(), params) != 1) return -1;
  int ok = encrypt ? EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, keys.cipher_key.data(), iv)
                   : EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, keys.cipher_key.data(), iv);
  if (ok != 1) return -1;
  return current ? 1 : 2;
}

}  // namespace kiln::service
