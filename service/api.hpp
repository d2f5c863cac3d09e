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

struct Request {
  std::string method;
  std::string target;  // raw path with optional ?query, percent-encoded as received
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  // Mutual TLS: the client's certificate chain, DER, leaf first (empty without a client certificate).
  std::vector<std::string> client_certificates;
};

struct Response {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::map<std::string, std::string> headers;
};

// One row of the route table: used by the router and enumerated by the authorization tests.
struct RouteInfo {
  std::string method;
  std::string pattern;  // "/v1/devices/{}/claim"
  std::vector<Role> roles;  // empty: a device endpoint, authenticated by its client certificate
};
const std::vector<RouteInfo>& route_table();

class VoucherKey;

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
};

// "kiln_" + 64 hex digits of randomness.
std::string new_token();
std::string token_hash(std::string_view token);

}  // namespace kiln::service
