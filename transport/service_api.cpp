// The typed service client: credentials resolution, JSON calls, paging, batched import, resumable upload.
#include "transport/service_api.hpp"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <iostream>
#include <sstream>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "core/device_uid.hpp"
#include "core/base64.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/file_digest.hpp"
#include "core/interrupt.hpp"
#include "core/time.hpp"
#include "signing/message_signature.hpp"
#include "signing/openssl_ptr.hpp"
#include "signing/signer.hpp"
#include "transport/device_claims.hpp"

namespace kiln::transport {
namespace {

constexpr std::size_t import_batch_bytes = 4 << 20;
constexpr long import_apply_seconds = 600;  // a million units take the service a while to check and apply

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

Json parse_json(const HttpResponse& response, const std::string& path) {
  auto value = Json::parse(response.body, nullptr, false);
  if (value.is_discarded())
    throw Error(ExitCode::service, fmt::format("the service answered {} with something that is not JSON", path));
  return value;
}

std::string segment(const std::string& text) { return url_encode(text); }

std::string device_query(const DeviceFilter& filter) {
  std::string q;
  auto add = [&](const char* name, const std::optional<std::string>& value) {
    if (value) q += fmt::format("&{}={}", name, url_encode(*value));
  };
  add("group", filter.group);
  add("product", filter.product);
  add("state", filter.state);
  add("version", filter.version);
  add("seen_before", filter.seen_before);
  add("seen_after", filter.seen_after);
  if (filter.claimed) q += *filter.claimed ? "&claimed=true" : "&claimed=false";
  return q;
}

}  // namespace

std::filesystem::path credentials_path() {
  if (auto xdg = env("XDG_CONFIG_HOME")) return std::filesystem::path(*xdg) / "kiln" / "credentials";
  if (auto home = env("HOME")) return std::filesystem::path(*home) / ".config" / "kiln" / "credentials";
  throw Error(ExitCode::failure, "neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep credentials");
}

void check_client_certificate(const ClientCertificate& client) {
  if (client.certificate.empty() || client.key.empty())
    throw Error(ExitCode::usage, "mutual TLS needs both --client-cert FILE and --client-key FILE",
                "or set KILN_CLIENT_CERT and KILN_CLIENT_KEY");
  if (client.key.starts_with("pkcs11:"))
    throw Error(ExitCode::usage, "--client-key takes a PEM key file; a pkcs11: key cannot authenticate TLS yet",
                "issue the station a TLS key in a file (0600), or use a token");
  for (const auto& file : {client.certificate, client.key})
    if (!std::filesystem::is_regular_file(file))
      throw Error(ExitCode::not_found, fmt::format("client certificate file {} does not exist", file));
  auto mode = std::filesystem::status(client.key).permissions();
  using std::filesystem::perms;
  if ((mode & (perms::group_all | perms::others_all)) != perms::none)
    throw Error(ExitCode::authentication,
                fmt::format("client key {} is readable by other users (mode {:o}): refusing to use it", client.key,
                            static_cast<unsigned>(mode) & 0777),
                fmt::format("chmod 600 {}", client.key));
  if (read_text_file(client.key).find("ENCRYPTED") != std::string::npos)
    throw Error(ExitCode::usage, fmt::format("client key {} is encrypted", client.key),
                "TLS client keys must be unencrypted PEM files, protected by mode 0600");
}

Credentials load_credentials(const std::optional<std::string>& configured_service, const ClientCertificate& client) {
  Credentials c;
  auto path = credentials_path();
  if (std::filesystem::exists(path)) {
    auto stored = Json::parse(read_text_file(path), nullptr, false);
    if (!stored.is_object())
      throw Error(ExitCode::failure, fmt::format("{} is damaged", path.string()), "run kiln login again");
    c.service = stored.value("service", "");
    c.token = stored.value("token", "");
    c.ca_file = stored.value("ca_file", "");
    c.client.certificate = stored.value("client_cert", "");
    c.client.key = stored.value("client_key", "");
  }
  if (c.service.empty() && configured_service) c.service = *configured_service;
  if (auto v = env("KILN_SERVICE")) c.service = *v;
  if (auto v = env("KILN_TOKEN")) c.token = *v;
  if (auto v = env("KILN_CA_FILE")) c.ca_file = *v;
  if (client.given()) {
    // A certificate named on the command line is the identity of this call: no stored token with it.
    c.client = client;
    if (!env("KILN_TOKEN")) c.token.clear();
  }
  if (c.client.given()) check_client_certificate(c.client);
  if (c.service.empty() || (c.token.empty() && !c.client.given()))
    throw Error(ExitCode::authentication, "not logged in to a kiln service",
                "kiln login --service https://HOST:PORT --token-file FILE (CI: set KILN_SERVICE and KILN_TOKEN; "
                "stations: --client-cert FILE --client-key FILE)");
  return c;
}

ServiceApi::ServiceApi(const Credentials& credentials)
    : http_(HttpConfig{.base_url = credentials.service,
                       .bearer_token = credentials.token,
                       .ca_file = credentials.ca_file,
                       .client_cert = credentials.client.certificate,
                       .client_key = credentials.client.key,
                       .stall_seconds = credentials.stall_seconds}) {}

Json ServiceApi::get(const std::string& path) { return parse_json(http_.call({.method = "GET", .path = path}), path); }

Json ServiceApi::post(const std::string& path, const Json& body, std::string idempotency_key) {
  if (idempotency_key.empty()) idempotency_key = new_idempotency_key();
  return parse_json(http_.call({.method = "POST", .path = path, .body = body.dump(), .idempotency_key = idempotency_key}), path);
}

Json ServiceApi::patch(const std::string& path, const Json& body) {
  return parse_json(http_.call({.method = "PATCH", .path = path, .body = body.dump()}), path);
}

Json ServiceApi::remove(const std::string& path) { return parse_json(http_.call({.method = "DELETE", .path = path}), path); }

Json login(const Credentials& credentials) {
  ServiceApi api(credentials);
  Json who = whoami(api);
  Json stored{{"service", credentials.service}};
  if (!credentials.token.empty()) stored["token"] = credentials.token;
  if (!credentials.ca_file.empty()) stored["ca_file"] = std::filesystem::absolute(credentials.ca_file).string();
  if (credentials.client.given()) {
    stored["client_cert"] = std::filesystem::absolute(credentials.client.certificate).string();
    stored["client_key"] = std::filesystem::absolute(credentials.client.key).string();
  }
  auto path = credentials_path();
  if (std::filesystem::create_directories(path.parent_path()))
    std::filesystem::permissions(path.parent_path(), std::filesystem::perms::owner_all);
  write_file_atomic(path, as_bytes(stored.dump() + "\n"), 0600);
  who["service"] = credentials.service;
  who["credentials"] = path.string();
  return who;
}

bool logout() { return std::filesystem::remove(credentials_path()); }

Json whoami(ServiceApi& api) { return api.get("/v1/whoami"); }

namespace {
void add_trust(Json& body, const ProductTrust& trust) {
  if (!trust.boot_keys.empty()) body["boot_keys"] = trust.boot_keys;
  if (!trust.manifest_keys.empty()) body["manifest_keys"] = trust.manifest_keys;
  if (trust.manifest_threshold > 0) body["manifest_threshold"] = trust.manifest_threshold;
  if (trust.slot_size > 0) body["slot_size"] = trust.slot_size;
}
}  // namespace

Json create_product(ServiceApi& api, const std::string& name, const std::string& description,
                    const ProductTrust& trust) {
  Json body = {{"name", name}, {"description", description}};
  add_trust(body, trust);
  return api.post("/v1/products", body);
}
Json update_product(ServiceApi& api, const std::string& ref, const ProductTrust& trust) {
  Json body = Json::object();
  add_trust(body, trust);
  return api.patch("/v1/products/" + segment(ref), body);
}
Json publish_trust_update(ServiceApi& api, const std::string& ref, ByteView update) {
  return api.post("/v1/products/" + segment(ref) + "/trust-updates", {{"update", to_base64(update)}});
}
Json list_trust_updates(ServiceApi& api, const std::string& ref) {
  return api.get("/v1/products/" + segment(ref) + "/trust-updates");
}
Json list_products(ServiceApi& api) { return api.get("/v1/products")["items"]; }
Json show_product(ServiceApi& api, const std::string& ref) { return api.get("/v1/products/" + segment(ref)); }
Json delete_product(ServiceApi& api, const std::string& ref) { return api.remove("/v1/products/" + segment(ref)); }

Json create_group(ServiceApi& api, const std::string& product, const std::string& name, const std::string& description) {
  return api.post("/v1/groups", {{"product", product}, {"name", name}, {"description", description}});
}
Json list_groups(ServiceApi& api, const std::optional<std::string>& product) {
  return api.get("/v1/groups" + (product ? "?product=" + url_encode(*product) : std::string()))["items"];
}
Json show_group(ServiceApi& api, const std::string& ref) { return api.get("/v1/groups/" + segment(ref)); }
Json update_group(ServiceApi& api, const std::string& ref, const std::optional<std::string>& name,
                  const std::optional<std::string>& description) {
  Json body = Json::object();
  if (name) body["name"] = *name;
  if (description) body["description"] = *description;
  return api.patch("/v1/groups/" + segment(ref), body);
}
Json delete_group(ServiceApi& api, const std::string& ref) { return api.remove("/v1/groups/" + segment(ref)); }

std::optional<std::string> list_devices(ServiceApi& api, const DeviceFilter& filter,
                                        const std::function<void(const Json&)>& each, int page_size,
                                        const DevicePage& page) {
  std::optional<std::string> cursor = page.cursor;
  std::uint64_t seen = 0;
  while (true) {
    check_interrupted();
    std::uint64_t size = static_cast<std::uint64_t>(page_size);
    if (page.limit > 0) size = std::min(size, page.limit - seen);
    std::string path = fmt::format("/v1/devices?limit={}{}", size, device_query(filter));
    Json reply = api.get(cursor ? path + "&cursor=" + url_encode(*cursor) : path);
    for (const auto& device : reply["items"]) {
      each(device);
      ++seen;
    }
    if (!reply["next_cursor"].is_string()) return std::nullopt;
    cursor = reply["next_cursor"].get<std::string>();
    if (page.limit > 0 && seen >= page.limit) return cursor;
  }
}

Json count_devices(ServiceApi& api, const std::string& by, const DeviceFilter& filter) {
  return api.get("/v1/devices/count?by=" + url_encode(by) + device_query(filter));
}

Json show_device(ServiceApi& api, const std::string& id) { return api.get("/v1/devices/" + segment(id)); }

Json assign_device(ServiceApi& api, const std::string& id, const std::string& group) {
  return api.post("/v1/devices/" + segment(id) + "/assign", {{"group", group}});
}

Json assign_device_batch(ServiceApi& api, const std::vector<std::string>& ids, const std::string& group) {
  return api.post("/v1/devices/assign", Json{{"group", group}, {"devices", ids}});
}

Json update_device(ServiceApi& api, const std::string& id, const std::optional<std::string>& time_zone) {
  return api.patch("/v1/devices/" + segment(id), Json{{"time_zone", time_zone ? Json(*time_zone) : Json(nullptr)}});
}

Json import_devices(ServiceApi& api, const std::filesystem::path& bundle, const std::function<void(std::uint64_t)>& progress) {
  std::ifstream in(bundle, std::ios::binary);
  if (!in) throw Error(ExitCode::not_found, fmt::format("cannot open bundle {}", bundle.string()));
  // The station signed every byte: send them unchanged. A large bundle goes in parts of one import.
  bool in_parts = std::filesystem::file_size(bundle) > import_batch_bytes;
  std::string import_id = in_parts ? new_idempotency_key() : std::string();
  std::uint64_t sent = 0, offset = 0, parts = 0;
  Json last = Json::object();
  std::string part, line;
  std::size_t units = 0;
  auto flush = [&](bool last_part) {
    std::string path = in_parts ? fmt::format("/v1/devices/import?import={}&offset={}", import_id, offset) : "/v1/devices/import";
    // One key per part, reused by the client's retries: a part is applied once.
    HttpRequest post{.method = "POST",
                     .path = path,
                     .body = part,
                     .content_type = "application/x-ndjson",
                     .idempotency_key = new_idempotency_key()};
    // The part with the trailer makes the service check and apply the whole bundle before it answers.
    if (in_parts && last_part) post.stall_seconds = import_apply_seconds;
    try {
      last = parse_json(api.http().call(post), "/v1/devices/import");
    } catch (const Error& e) {
      if (e.code() != ExitCode::verification_failed) throw;
      throw Error(e.code(), fmt::format("{}: {}", bundle.string(), e.what()),
                  "the service imports only bundles exactly as 'kiln factory ledger export' signed them, by a station "
                  "whose CA the tenant registered (kiln device ca add CA.pem --key CA.key): export the bundle again");
    }
    offset += part.size();
    sent += units;
    ++parts;
    part.clear();
    units = 0;
    if (progress) progress(sent);
  };
  while (std::getline(in, line)) {
    check_interrupted();
    if (!in.eof()) line += '\n';  // the last line may lack its newline: keep the bytes as they are
    if (in_parts && !part.empty() && part.size() + line.size() > import_batch_bytes) flush(false);
    if (line.find_first_not_of(" \t\r\n") != std::string::npos && line.find("\"bundle_signature\"") == std::string::npos)
      ++units;
    part += line;
  }
  flush(true);
  if (last.contains("received"))  // the service staged every part and is still waiting for the trailer
    throw Error(ExitCode::verification_failed,
                fmt::format("{} has no signature trailer: it is unsigned or truncated, and nothing was imported",
                            bundle.string()),
                "export the bundle again with 'kiln factory ledger export' and import the whole file");
  return {{"bundle", bundle.string()}, {"imported", last.value("imported", std::uint64_t{0})}, {"requests", parts}};
}

Json claim_challenge(ServiceApi& api, const std::string& id) {
  return api.post("/v1/devices/" + segment(id) + "/claim-challenge", Json::object());
}

Json claim_with_signature(ServiceApi& api, const std::string& id, const std::string& nonce, ByteView signature) {
  return api.post("/v1/devices/" + segment(id) + "/claim", {{"nonce", nonce}, {"signature", to_hex(signature)}});
}

Json claim_device(ServiceApi& api, const std::string& id, const std::function<Bytes(const std::string&)>& sign) {
  Json challenge = claim_challenge(api, id);
  Bytes signature = sign(challenge["message"].get<std::string>());
  return claim_with_signature(api, id, challenge["nonce"].get<std::string>(), signature);
}

Json claim_devices(ServiceApi& api, const std::vector<std::string>& ids,
                   const std::function<Bytes(const std::string&, const std::string&)>& sign) {
  Json rows = Json::array();
  for (const auto& id : ids) {
    check_interrupted();
    try {
      claim_device(api, id, [&](const std::string& message) { return sign(id, message); });
      rows.push_back({{"uid", id}, {"result", claim_result_name(ClaimResult::claimed)}, {"error", nullptr}, {"exit_code", nullptr}});
    } catch (const Error& e) {
      if (e.code() == ExitCode::interrupted) throw;
      rows.push_back({{"uid", id}, {"result", claim_result_name(ClaimResult::failed)}, {"error", e.what()}, {"exit_code", static_cast<int>(e.code())}});
    }
  }
  return rows;
}

std::vector<std::string> read_device_ids(const std::filesystem::path& file) {
  if (file == "-") {  // standard input: UIDs piped from another command (device list -o jsonl | ...)
    std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    return parse_device_ids(text, "standard input");
  }
  if (!std::filesystem::is_regular_file(file)) throw Error(ExitCode::not_found, fmt::format("cannot open {}", file.string()));
  return parse_device_ids(read_text_file(file), file.string());
}

std::vector<std::string> parse_device_ids(const std::string& text_of_file, const std::string& name) {
  std::istringstream in(text_of_file);
  std::vector<std::string> ids;
  std::set<std::string> seen;
  std::string line;
  std::size_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;
    auto last = line.find_last_not_of(" \t\r");
    std::string text = line.substr(first, last - first + 1);
    std::string id;
    if (text.front() == '{') {
      auto row = Json::parse(text, nullptr, false);
      if (row.is_object() && row.contains("bundle_signature")) continue;  // a ledger bundle's trailer
      for (const char* field : {"uid", "id"})
        if (row.is_object() && row.contains(field) && (*row.find(field)).is_string()) {
          id = row[field].get<std::string>();
          break;
        }
      if (id.empty())
        throw Error(ExitCode::failure, fmt::format("{} line {}: a JSON line needs a \"uid\" or \"id\" string", name, number));
    } else {
      if (text.find_first_of(" \t,") != std::string::npos)
        throw Error(ExitCode::failure, fmt::format("{} line {}: one device UID per line, got '{}'", name, number, text));
      id = text;
    }
    // The service's UID alphabet: an id also names files ({uid} in --key), so '/' never gets through.
    if (!is_device_uid(id))
      throw Error(ExitCode::failure,
                  fmt::format("{} line {}: a device UID holds up to 128 letters, digits and - _ . : only", name, number));
    if (seen.insert(id).second) ids.push_back(id);
  }
  return ids;
}

Bytes sign_message(const Signer& key, std::string_view message) {
  return kiln::sign_message(key, as_bytes(message), HashAlg::sha256);
}

namespace {

// DER SubjectPublicKeyInfo of a PEM certificate; throws Error naming the file when it is not one.
Bytes certificate_key(const std::string& pem, const std::filesystem::path& file) {
  ossl::Ptr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  ossl::Ptr<X509> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  EVP_PKEY* key = cert ? X509_get0_pubkey(cert.get()) : nullptr;
  int len = key ? i2d_PUBKEY(key, nullptr) : 0;
  ERR_clear_error();
  if (len <= 0)
    throw Error(ExitCode::failure, fmt::format("{} is not a PEM X.509 certificate", file.string()),
                "give the CA certificate (PEM), e.g. the --ca-cert of 'kiln factory init'");
  Bytes der(static_cast<std::size_t>(len));
  auto* p = der.data();
  i2d_PUBKEY(key, &p);
  return der;
}

}  // namespace

Json register_factory_ca(ServiceApi& api, const std::filesystem::path& certificate_pem, const Signer& ca_key,
                         bool stations) {
  auto pem = read_text_file(certificate_pem);
  if (certificate_key(pem, certificate_pem) != ca_key.public_key_der())
    throw Error(ExitCode::verification_failed,
                fmt::format("{} is not the private key of {}: the service registers a CA only with proof from its key",
                            ca_key.description(), certificate_pem.string()),
                "pass the CA's own key with --key (the --ca-key of 'kiln factory init')");
  auto challenge = api.post("/v1/factory-cas/challenge", {{"certificate", pem}});
  auto signature = sign_message(ca_key, challenge.at("message").get<std::string>());
  return api.post("/v1/factory-cas", {{"certificate", pem},
                                      {"stations", stations},
                                      {"nonce", challenge.at("nonce")},
                                      {"signature", to_hex(signature)}});
}
Json list_factory_cas(ServiceApi& api) { return api.get("/v1/factory-cas")["items"]; }

namespace {
Json reason_body(const std::string& reason) { return reason.empty() ? Json::object() : Json{{"reason", reason}}; }
}  // namespace

Json revoke_device(ServiceApi& api, const std::string& id, const std::string& reason) {
  return api.post("/v1/devices/" + segment(id) + "/revoke", reason_body(reason));
}

Json revoke_factory_ca(ServiceApi& api, const std::string& ref, const std::string& reason) {
  return api.post("/v1/factory-cas/" + segment(ref) + "/revoke", reason_body(reason));
}

Json list_tokens(ServiceApi& api) { return api.get("/v1/tokens")["items"]; }

Json revoke_token(ServiceApi& api, const std::string& ref) { return api.remove("/v1/tokens/" + segment(ref)); }

Json upload_image(ServiceApi& api, const std::filesystem::path& file,
                  const std::function<void(std::uint64_t, std::uint64_t)>& progress, std::size_t chunk_size) {
  std::string sha;
  std::uint64_t size = 0;
  {
    ChunkReader reader(file);
    Hasher hasher(HashAlg::sha256);
    for (auto piece = reader.next(); !piece.empty(); piece = reader.next()) {
      check_interrupted();
      hasher.update(piece);
    }
    sha = to_hex(hasher.finish());
    size = reader.size();
  }
  if (size == 0) throw Error(ExitCode::failure, fmt::format("{} is empty", file.string()));
  Json status = api.post("/v1/images", {{"sha256", sha}, {"size", size}, {"name", file.filename().string()}});
  bool already_there = status.value("complete", false);
  std::uint64_t received = status.value("received", std::uint64_t{0});
  std::uint64_t resumed_from = received;
  if (!already_there) {
    std::ifstream in(file, std::ios::binary);
    std::string chunk;
    while (received < size) {
      check_interrupted();
      if (progress) progress(received, size);
      chunk.resize(static_cast<std::size_t>(std::min<std::uint64_t>(chunk_size, size - received)));
      in.seekg(static_cast<std::streamoff>(received));
      in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      if (!in) throw Error(ExitCode::failure, fmt::format("cannot read {}", file.string()));
      HttpRequest put{.method = "PUT",
                      .path = fmt::format("/v1/images/{}/content?offset={}", sha, received),
                      .body = chunk,
                      .content_type = "application/octet-stream"};
      auto response = api.http().send(put);
      if (response.status == 409) {
        // Our view of the offset is stale (e.g. a chunk landed but its answer was lost): ask and go on.
        received = show_image(api, sha).value("received", std::uint64_t{0});
        continue;
      }
      if (response.status >= 400) throw_http_error(put, response);
      status = parse_json(response, put.path);
      received = status.value("received", std::uint64_t{0});
    }
    if (progress) progress(size, size);
  }
  return {{"id", sha}, {"size", size}, {"uploaded", !already_there}, {"resumed_from", resumed_from}};
}

Json list_images(ServiceApi& api) { return api.get("/v1/images")["items"]; }
Json show_image(ServiceApi& api, const std::string& id) { return api.get("/v1/images/" + segment(id)); }

namespace {

// FILE.part, appended to across attempts and runs; flushed to disk before it is renamed.
class PartFile {
 public:
  explicit PartFile(std::filesystem::path path) : path_(std::move(path)) {
    // Only a regular file of our own is resumed: never through a symlink (bytes would land in, or
    // truncate, whatever it points to), nor a FIFO or device (O_NONBLOCK: opening one must not hang).
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644);
    struct stat st {};
    if (fd_ < 0 && errno != ELOOP && errno != ENXIO)
      throw Error(ExitCode::failure, fmt::format("cannot write {}: {}", path_.string(), std::strerror(errno)));
    if (fd_ < 0 || ::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode))
      throw Error(ExitCode::failure, fmt::format("{} is not a regular file: it is not resumed", path_.string()),
                  "remove it (or choose another output file) and run the command again");
    size_ = static_cast<std::uint64_t>(st.st_size);
  }
  ~PartFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  PartFile(const PartFile&) = delete;
  PartFile& operator=(const PartFile&) = delete;
  std::uint64_t size() const { return size_; }
  void truncate() {
    if (::ftruncate(fd_, 0) != 0) throw Error(ExitCode::failure, fmt::format("cannot truncate {}", path_.string()));
    size_ = 0;
  }
  void write(std::string_view data) {
    while (!data.empty()) {
      auto n = ::write(fd_, data.data(), data.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw Error(ExitCode::failure, fmt::format("cannot write {}: {}", path_.string(), std::strerror(errno)));
      data.remove_prefix(static_cast<std::size_t>(n));
      size_ += static_cast<std::uint64_t>(n);
    }
  }
  void sync() {
    if (::fsync(fd_) != 0) throw Error(ExitCode::failure, fmt::format("cannot flush {}", path_.string()));
  }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

}  // namespace

Json download_image(ServiceApi& api, const std::string& id, const std::filesystem::path& out) {
  Json image = show_image(api, id);
  if (!image.value("complete", false))
    throw Error(ExitCode::conflict, fmt::format("image {} is still being uploaded", id), "finish the upload first");
  auto size = image.value("size", std::uint64_t{0});
  // A device, FIFO or "-" is written in place, and only with verified content: the download goes to a
  // private temporary file first (not resumable), never to "<device>.part" renamed over the device.
  std::optional<TemporaryFile> staging;
  if (writes_in_place(out)) staging.emplace(std::filesystem::temp_directory_path() / "kiln-download");
  auto part_path = staging ? staging->path() : std::filesystem::path(out.string() + ".part");
  std::uint64_t resumed_from = 0;
  {
    PartFile part(part_path);
    if (part.size() > size) part.truncate();  // not a prefix of this image
    resumed_from = part.size();
    constexpr int attempts_without_progress = 4;
    int failures = 0;
    while (part.size() < size) {
      check_interrupted();
      std::uint64_t before = part.size();
      HttpRequest get{.method = "GET", .path = "/v1/images/" + segment(id) + "/content"};
      if (before > 0) get.headers.push_back(fmt::format("Range: bytes={}-", before));
      get.sink = [&](std::string_view data) { part.write(data.substr(0, static_cast<std::size_t>(std::min<std::uint64_t>(data.size(), size - part.size())))); };
      try {
        api.http().call(get);
        if (part.size() < size)
          throw Error(ExitCode::service, fmt::format("the service sent {} of {} bytes of image {}", part.size(), size, id));
      } catch (const Error& e) {
        if (e.code() != ExitCode::service) throw;
        failures = part.size() > before ? 1 : failures + 1;
        if (failures >= attempts_without_progress)
          throw Error(ExitCode::service, e.what(),
                      fmt::format("{} bytes are kept in {}: run the same command again to resume", part.size(),
                                  part_path.string()))
              .with_detail(e.detail());
        std::this_thread::sleep_for(std::chrono::milliseconds(200 * failures));
      }
    }
    part.sync();
  }
  if (to_hex(file_digest(HashAlg::sha256, part_path)) != id) {
    std::filesystem::remove(part_path);
    throw Error(ExitCode::verification_failed, fmt::format("downloaded content does not hash to {}", id),
                "the partial download was discarded: run the command again");
  }
  if (staging)
    copy_file_to(part_path, out);
  else
    std::filesystem::rename(part_path, out);
  return {{"id", id}, {"file", out.string()}, {"size", size}, {"resumed_from", resumed_from}};
}

Json link_image_manifest(ServiceApi& api, const std::string& image, const std::string& manifest) {
  return api.post("/v1/images/" + segment(image) + "/manifest", {{"manifest", manifest}});
}

Json create_deployment(ServiceApi& api, const DeploymentRequest& request) {
  Json body = {{"group", request.group}};
  if (request.trust_update)
    body["trust_update"] = to_base64(*request.trust_update);
  else
    body["images"] = request.images;
  if (request.manifest) body["manifest"] = *request.manifest;
  if (request.waves.size() == 1) body["rollout"] = request.waves[0];
  else body["rollout"] = request.waves;
  if (request.step_after) body["step_after"] = *request.step_after;
  if (request.halt_never)
    body["halt_on_failure"] = "never";
  else if (request.halt_on_failure)
    body["halt_on_failure"] = *request.halt_on_failure;
  if (request.halt_min_executed) body["halt_min_executed"] = *request.halt_min_executed;
  if (request.dry_run) body["dry_run"] = true;
  for (auto& [key, value] : request.controls.items()) body[key] = value;
  return api.post("/v1/deployments", body);
}
Json list_deployments(ServiceApi& api, const std::optional<std::string>& group) {
  return api.get("/v1/deployments" + (group ? "?group=" + url_encode(*group) : std::string()))["items"];
}
Json show_deployment(ServiceApi& api, const std::string& id) { return api.get("/v1/deployments/" + segment(id)); }
Json list_deployment_devices(ServiceApi& api, const std::string& id, const std::optional<std::string>& status) {
  return api.get("/v1/deployments/" + segment(id) + "/devices" + (status ? "?status=" + url_encode(*status) : std::string()))["items"];
}

DeploymentState deployment_state(const Json& deployment) {
  auto it = deployment.find("state");
  auto text = it != deployment.end() && it->is_string() ? it->get<std::string>() : std::string();
  if (auto state = parse_deployment_state(text)) return *state;
  throw Error(ExitCode::service,
              fmt::format("the service reports deployment {} in a state this kiln does not know: '{}'",
                          deployment.value("id", "?"), text),
              "upgrade kiln to one that knows the service's deployment states");
}

bool deployment_settled(const Json& deployment) { return is_settled(deployment_state(deployment)); }

Json watch_deployment(ServiceApi& api, const std::string& id, int interval_ms,
                      const std::function<void(const Json&)>& on_change) {
  Json last;
  while (true) {
    Json view = show_deployment(api, id);
    Json compared = view;
    compared.erase("updated_at");
    if (compared != last) {
      on_change(view);
      last = std::move(compared);
    }
    if (deployment_settled(view)) return view;
    // Sleep in small steps so Ctrl-C is answered at once.
    for (int slept = 0; slept < interval_ms; slept += 50) {
      check_interrupted();
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(50, interval_ms - slept)));
    }
    check_interrupted();
  }
}

Json deployment_report(ServiceApi& api, const std::string& id) {
  return api.get("/v1/deployments/" + segment(id) + "/report")["items"];
}

std::vector<Json> deployment_events(const Json& before, const Json& before_devices, const Json& after,
                                    const Json& after_devices, const std::string& at) {
  std::vector<Json> events;
  auto event = [&](const std::string& name) {
    Json e = {{"event", name}, {"deployment", after["id"]}, {"state", after["state"]}, {"at", at}};
    return e;
  };
  if (before.is_null()) {
    Json e = event("watching");
    e["wave"] = after["wave"];
    e["admitted"] = after["admitted"];
    e["failures"] = after["failures"];
    events.push_back(std::move(e));
  } else if (after.value("wave", 0) > before.value("wave", 0)) {
    for (int w = before.value("wave", 0) + 1; w <= after.value("wave", 0); ++w) {
      Json e = event("wave_opened");
      e["wave"] = w;
      if (after["waves"].is_array() && static_cast<std::size_t>(w) <= after["waves"].size())
        e["percent"] = after["waves"][static_cast<std::size_t>(w - 1)]["percent"];
      events.push_back(std::move(e));
    }
  }
  std::map<std::string, Json> old;
  if (before_devices.is_array())
    for (auto& d : before_devices) old[d.value("device", "")] = d;
  if (after_devices.is_array())
    for (auto& d : after_devices) {
      auto id = d.value("device", "");
      auto it = old.find(id);
      std::string from = it == old.end() ? "" : it->second.value("status", "");
      if (before.is_null() || from == d.value("status", "")) continue;
      Json e = event("device_state");
      e["device"] = id;
      e["from"] = from.empty() ? Json(nullptr) : Json(from);
      e["to"] = d["status"];
      e["wave"] = d["wave"];
      if (d.contains("detail") && d["detail"].is_string() && !d["detail"].get<std::string>().empty())
        e["detail"] = d["detail"];
      events.push_back(std::move(e));
    }
  auto state = deployment_state(after);
  if (!before.is_null() && state != deployment_state(before)) {
    // Each state's event is named after it, but for active: the rollout resumed.
    Json e = event(state == DeploymentState::active ? "resumed" : state_name(state));
    if ((state == DeploymentState::halted || state == DeploymentState::aborted) && after["halt_reason"].is_string())
      e["reason"] = after["halt_reason"];
    if (state == DeploymentState::paused && after.contains("pause_reason") && after["pause_reason"].is_string())
      e["reason"] = after["pause_reason"];
    events.push_back(std::move(e));
  } else if (before.is_null() && state != DeploymentState::active) {
    events.back()["settled"] = deployment_settled(after);
  }
  return events;
}

Json watch_deployment_events(ServiceApi& api, const std::string& id, int interval_ms,
                             const std::function<void(const Json&)>& on_event) {
  Json last, last_devices;
  while (true) {
    Json view = show_deployment(api, id);
    Json devices = list_deployment_devices(api, id, std::nullopt);
    for (auto& e : deployment_events(last, last_devices, view, devices, now_iso8601())) on_event(e);
    last = view;
    last_devices = std::move(devices);
    if (deployment_settled(view)) return view;
    for (int slept = 0; slept < interval_ms; slept += 50) {
      check_interrupted();
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(50, interval_ms - slept)));
    }
    check_interrupted();
  }
}

Json change_deployment(ServiceApi& api, const std::string& id, const std::string& action) {
  return api.post("/v1/deployments/" + segment(id) + "/" + action, Json::object());
}

Json delete_image(ServiceApi& api, const std::string& id) { return api.remove("/v1/images/" + segment(id)); }

Json delete_deployment(ServiceApi& api, const std::string& id) { return api.remove("/v1/deployments/" + segment(id)); }

void list_audit(ServiceApi& api, const AuditFilter& filter, std::uint64_t limit,
                const std::function<void(const Json&)>& each) {
  std::string query;
  auto add = [&](const char* name, const std::optional<std::string>& value) {
    if (value) query += fmt::format("&{}={}", name, url_encode(*value));
  };
  add("actor", filter.actor);
  add("action", filter.action);
  add("target", filter.target);
  add("since", filter.since);
  add("until", filter.until);
  std::optional<std::string> cursor;
  std::uint64_t seen = 0;
  while (true) {
    check_interrupted();
    std::uint64_t size = limit > 0 ? std::min<std::uint64_t>(1000, limit - seen) : 1000;
    std::string path = fmt::format("/v1/audit?limit={}{}", size, query);
    Json reply = api.get(cursor ? path + "&cursor=" + url_encode(*cursor) : path);
    for (const auto& entry : reply["items"]) {
      each(entry);
      ++seen;
    }
    if (!reply["next_cursor"].is_string() || (limit > 0 && seen >= limit)) return;
    cursor = reply["next_cursor"].get<std::string>();
  }
}

}  // namespace kiln::transport
