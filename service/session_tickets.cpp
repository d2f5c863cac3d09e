// Session-ticket keys derived from a shared secret and the clock's period (see the header).
#include "service/session_tickets.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include <algorithm>

#include <cstring>
#include <ctime>
#include <fstream>
#include <string>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/kdf.hpp"

namespace kiln::service {
namespace {

int context_index() {
  static int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

Error bad_file(const std::filesystem::path& file, const std::string& what) {
  return Error(ExitCode::failure, "cannot use the session-ticket secret " + file.string() + ": " + what,
               "restore it from another instance's copy of the service directory, or delete it to make a new "
               "one (clients then make one full handshake each)");
}

}  // namespace

SessionTicketKeys::SessionTicketKeys(const Secret& secret, std::chrono::seconds period)
    : secret_(secret), period_(period) {
  if (period_.count() <= 0) throw Error(ExitCode::usage, "the session-ticket period must be positive");
}

SessionTicketKeys::Secret SessionTicketKeys::load_or_create(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) {
    Secret fresh{};
    if (RAND_bytes(fresh.data(), static_cast<int>(fresh.size())) != 1)
      throw Error(ExitCode::failure, "cannot draw random bytes for the session-ticket secret");
    try {
      AtomicFile out(file, 0600, AtomicFile::Overwrite::refuse);
      out.write(to_hex(ByteView(fresh.data(), fresh.size())) + "\n");
      out.commit();
      return fresh;
    } catch (const Error& error) {
      // Another instance made it meanwhile: use theirs, so both open each other's tickets.
      if (error.code() != ExitCode::conflict) throw;
    }
  }
  std::ifstream in(file);
  if (!in) throw bad_file(file, "it cannot be read");
  std::string text;
  std::getline(in, text);
  while (!text.empty() && (text.back() == '\r' || text.back() == ' ')) text.pop_back();
  if (text.size() != 64 || text.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
    throw bad_file(file, "it does not hold 64 hex digits");
  auto bytes = from_hex(text);
  Secret secret{};
  std::memcpy(secret.data(), bytes.data(), secret.size());
  return secret;
}

std::int64_t SessionTicketKeys::period_of(std::int64_t unix_seconds) const {
  auto length = static_cast<std::int64_t>(period_.count());
  return unix_seconds >= 0 ? unix_seconds / length : -((-unix_seconds + length - 1) / length);
}

SessionTicketKeys::Key SessionTicketKeys::key_of(std::int64_t period) const {
  std::string info = "kiln-service session ticket ";
  for (int i = 7; i >= 0; --i) info.push_back(static_cast<char>(static_cast<std::uint64_t>(period) >> (8 * i)));
  auto out = hkdf(EVP_sha256(), ByteView(secret_.data(), secret_.size()),
                  ByteView(reinterpret_cast<const std::uint8_t*>(info.data()), info.size()), 80);
  Key key{};
  std::memcpy(key.name.data(), out.data(), 16);
  std::memcpy(key.cipher.data(), out.data() + 16, 32);
  std::memcpy(key.mac.data(), out.data() + 48, 32);
  OPENSSL_cleanse(out.data(), out.size());
  return key;
}

std::optional<SessionTicketKeys::Found> SessionTicketKeys::find(const std::uint8_t* name,
                                                                std::int64_t unix_seconds) const {
  auto now = period_of(unix_seconds);
  for (std::int64_t period : {now, now - 1, now + 1}) {
    auto key = key_of(period);
    if (CRYPTO_memcmp(key.name.data(), name, key.name.size()) == 0) return Found{key, period < now};
  }
  return std::nullopt;
}

void SessionTicketKeys::attach(SSL_CTX* ctx) const {
  SSL_CTX_set_ex_data(ctx, context_index(), const_cast<SessionTicketKeys*>(this));
  SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, &SessionTicketKeys::on_ticket);
  SSL_CTX_set_session_ticket_cb(ctx, &SessionTicketKeys::on_new_ticket, nullptr, const_cast<SessionTicketKeys*>(this));
  // A session lives as long as its ticket can be opened somewhere: the period it was issued in and the next.
  SSL_CTX_set_timeout(ctx, static_cast<long>(2 * period_.count()));
}

namespace {

std::string der_of(X509* certificate) {
  int length = i2d_X509(certificate, nullptr);
  std::string der(static_cast<std::size_t>(std::max(length, 0)), '\0');
  auto* out = reinterpret_cast<unsigned char*>(der.data());
  if (length > 0) i2d_X509(certificate, &out);
  return der;
}

}  // namespace

// Puts the client's chain (without the leaf, which the session keeps) into the ticket's application data:
// DER certificates one after the other (each delimits itself). On a resumed connection the chain is already
// in the session (from its ticket) and is carried over to the renewed ticket.
int SessionTicketKeys::on_new_ticket(SSL* ssl, void* /*self*/) {
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl);
  if (!chain || sk_X509_num(chain) == 0) return 1;
  std::string data;
  for (int i = 0; i < sk_X509_num(chain); ++i) data += der_of(sk_X509_value(chain, i));
  return SSL_SESSION_set1_ticket_appdata(SSL_get0_session(ssl), data.data(), data.size());
}

std::vector<std::string> SessionTicketKeys::peer_certificates(SSL* ssl) {
  std::vector<std::string> out;
  X509* leaf = SSL_get1_peer_certificate(ssl);
  if (!leaf) return out;
  out.push_back(der_of(leaf));
  X509_free(leaf);
  // On a server the peer chain excludes the leaf.
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl);
  if (chain && sk_X509_num(chain) > 0) {
    for (int i = 0; i < sk_X509_num(chain); ++i) out.push_back(der_of(sk_X509_value(chain, i)));
    return out;
  }
  void* data = nullptr;
  std::size_t size = 0;
  if (!SSL_session_reused(ssl) || SSL_SESSION_get0_ticket_appdata(SSL_get0_session(ssl), &data, &size) != 1)
    return out;
  const auto* next = static_cast<const unsigned char*>(data);
  const auto* end = next + size;
  while (next < end) {
    X509* certificate = d2i_X509(nullptr, &next, static_cast<long>(end - next));
    if (!certificate) break;  // cannot happen for a ticket we sealed: stop at anything else
    out.push_back(der_of(certificate));
    X509_free(certificate);
  }
  return out;
}

int SessionTicketKeys::on_ticket(SSL* ssl, unsigned char* name, unsigned char* iv, EVP_CIPHER_CTX* cipher,
                                 EVP_MAC_CTX* mac, int encrypt) {
  auto* self = static_cast<const SessionTicketKeys*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), context_index()));
  if (!self) return encrypt ? -1 : 0;
  std::optional<Found> found;
  auto now = static_cast<std::int64_t>(std::time(nullptr));
  try {
    if (encrypt) {
      found = Found{self->key_of(self->period_of(now)), false};
    } else {
      found = self->find(name, now);
    }
  } catch (const Error&) {
    return encrypt ? -1 : 0;
  }
  if (!found) return 0;  // not ours, or expired: a full handshake
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, found->key.mac.data(), found->key.mac.size()),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end(),
  };
  int ok = EVP_MAC_CTX_set_params(mac, params);
  if (encrypt) {
    std::memcpy(name, found->key.name.data(), found->key.name.size());
    ok = ok && RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) == 1 &&
         EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, found->key.cipher.data(), iv) == 1;
  } else {
    ok = ok && EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, found->key.cipher.data(), iv) == 1;
  }
  OPENSSL_cleanse(&found->key, sizeof found->key);
  if (!ok) return encrypt ? -1 : 0;
  return !encrypt && found->renew ? 2 : 1;
}

}  // namespace kiln::service
