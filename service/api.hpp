// The kiln-service REST API as plain functions of a request: routing, auth, handlers (no sockets here).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "signing/image_crypto.hpp"

namespace kiln::service {

enum class Role { admin, operator_, factory, reader };
std::string role_name(Role role);
std::optional<Role> parse_role(std::string_view name);

class BlobFile;

// Bytes given to `receive` as they arrive; false from `receive` stops the transfer.
using ByteReceiver = std::function<bool(const char* data, std::size_t length)>;

// A body sent as it is read (image and manifest content), never held whole: pieces of open files and of
// bytes, which the HTTP layer (kiln-service: cpp-httplib's content provider) pulls in bounded chunks.
struct StreamedBody {
  struct Piece {
    std::shared_ptr<const BlobFile> file;  // null: the piece is `bytes`
    std::int64_t offset = 0;               // where the piece starts in `file`
    std::int64_t length = 0;
    std::string bytes = {};
  };
  std::vector<Piece> pieces;

  static StreamedBody of_file(std::shared_ptr<const BlobFile> file);
  std::int64_t size() const;
  // The bytes [first, last] as a body of their own (the answer to a Range).
  StreamedBody slice(std::int64_t first, std::int64_t last) const;
  // Gives the bytes [offset, offset + length) to `write` in pieces of at most 64 KiB. False when `write`
  // refuses them or a file ends before its piece does (nothing past the bytes read is ever sent).
  bool send(std::int64_t offset, std::int64_t length, const ByteReceiver& write) const;
};

struct Request {
  std::string method;
  std::string target;  // raw path with optional ?query, percent-encoded as received
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  // Mutual TLS: the client's certificate chain, DER, leaf first (empty without a client certificate).
  std::vector<std::string> client_certificates;
  // A body that may be large (an image chunk), handed over as a reader instead of `body` (kiln-service:
  // cpp-httplib's content reader). Service::handle drains it into an unnamed file (`body_file`) before the
  // request's unit of work begins: no store lock or transaction waits on a client's upload speed.
  std::function<bool(const ByteReceiver& receive)> read_body = {};
  std::shared_ptr<const BlobFile> body_file = {};
};

struct Response {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::map<std::string, std::string> headers;
  std::optional<StreamedBody> stream = {};  // sent instead of `body` when set
};

// One row of the route table: used by the router and enumerated by the authorization tests.
struct RouteInfo {
  std::string method;
  std::string pattern;  // "/v1/devices/{}/claim"
  std::vector<Role> roles;  // empty: a device endpoint, authenticated by its client certificate
};
const std::vector<RouteInfo>& route_table();

class VoucherKey;
struct RouteMatch;

struct ServiceConfig {
  // The store: a SQLite file (":memory:" in unit tests and the fuzzer) or a PostgreSQL connection URI.
  std::string database;
  std::filesystem::path image_dir;  // image content, one file per SHA-256
  int check_in_after = 60;          // seconds an agent waits before its next check-in
  std::string store_password_file = {};  // PostgreSQL: a 0600 file holding the password (else the environment)
  // The service's image-encryption key (kiln-service run --delivery-key, docs/encrypted-delivery.md): opens the
  // content key of releases encrypted for it, to wrap it for each device's own key. None: releases go out as
  // uploaded.
  std::shared_ptr<const mcuboot::ContentKeyOpener> delivery_key = {};
  // The service log (kiln-service writes it to stderr): one line per event worth an operator's eye, such
  // as an agent refused because its device was revoked. Unset: nothing is logged.
  std::function<void(const std::string&)> log = {};
  // The key that signs device-transfer vouchers (kiln-service run: DIR/voucher-key.pem, created on first
  // start). Unset: a key generated for this process.
  std::shared_ptr<const VoucherKey> voucher_key = {};
};

// Loads a delivery key: a PEM private key file that only its owner may read (mode 0600 or stricter), of a
// type MCUboot decrypts with, or a pkcs11: URI naming its module and PIN (module-path=, pin-source=).
// Throws Error(usage) saying what is wrong.
std::shared_ptr<const mcuboot::ContentKeyOpener> load_delivery_key(const std::filesystem::path& pem);

class Service {
 public:
  explicit Service(ServiceConfig config);
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  Response handle(const Request& request);

  // Bootstrap (kiln-service init / token create): returns the new secret token, shown once.
  std::int64_t create_tenant(const std::string& name);
  std::string create_token(std::int64_t tenant_id, Role role, const std::string& name);
  std::optional<std::int64_t> find_tenant(const std::string& name);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  // The request once its route is matched (and a streamed body spooled): one unit of work.
  Response handle(const Request& request, RouteMatch match);
};

// "kiln_" + 64 hex digits of randomness.
std::string new_token();
std::string token_hash(std::string_view token);

}  // namespace kiln::service
