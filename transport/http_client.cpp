// libcurl through dlopen/dlsym: one easy handle per client (connection and TLS session reuse),
// pinned CA, retries with exponential backoff and full jitter, stall detection, precise errors.
#include "transport/http_client.hpp"

#include <curl/curl.h>
#include <dlfcn.h>
#include <openssl/rand.h>

#include <chrono>
#include <cstdint>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "core/interrupt.hpp"
#include "kiln/version.hpp"

namespace kiln::transport {
namespace {

// The few libcurl functions kiln uses, resolved once from libcurl.so.4.
struct Curl {
  CURLcode (*global_init)(long);
  CURL* (*easy_init)();
  void (*easy_cleanup)(CURL*);
  void (*easy_reset)(CURL*);
  CURLcode (*easy_setopt)(CURL*, CURLoption, ...);
  CURLcode (*easy_perform)(CURL*);
  CURLcode (*easy_getinfo)(CURL*, CURLINFO, ...);
  const char* (*easy_strerror)(CURLcode);
  curl_slist* (*slist_append)(curl_slist*, const char*);
  void (*slist_free_all)(curl_slist*);
};

template <typename Fn>
void resolve(void* library, const char* name, Fn& fn) {
  fn = reinterpret_cast<Fn>(::dlsym(library, name));
  if (!fn) throw Error(ExitCode::failure, fmt::format("libcurl.so.4 has no {}", name), "install libcurl4 (7.68 or later)");
}

const Curl& curl() {
  static const Curl table = [] {
    void* library = ::dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!library)
      throw Error(ExitCode::failure, "cannot load libcurl.so.4, needed to talk to the service",
                  "install libcurl4 (Debian: apt install libcurl4)")
          .with_detail(::dlerror());
    Curl c{};
    resolve(library, "curl_global_init", c.global_init);
    resolve(library, "curl_easy_init", c.easy_init);
    resolve(library, "curl_easy_cleanup", c.easy_cleanup);
    resolve(library, "curl_easy_reset", c.easy_reset);
    resolve(library, "curl_easy_setopt", c.easy_setopt);
    resolve(library, "curl_easy_perform", c.easy_perform);
    resolve(library, "curl_easy_getinfo", c.easy_getinfo);
    resolve(library, "curl_easy_strerror", c.easy_strerror);
    resolve(library, "curl_slist_append", c.slist_append);
    resolve(library, "curl_slist_free_all", c.slist_free_all);
    c.global_init(CURL_GLOBAL_DEFAULT);
    return c;
  }();
  return table;
}

struct HeaderList {
  curl_slist* list = nullptr;
  ~HeaderList() {
    if (list) curl().slist_free_all(list);
  }
  void add(const std::string& line) { list = curl().slist_append(list, line.c_str()); }
};

struct Transfer {
  const HttpRequest* request;
  HttpResponse* response;
  CURL* easy;
};

size_t on_data(char* data, size_t size, size_t count, void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  std::string_view chunk(data, size * count);
  if (interrupted()) return 0;
  // The status is known once body bytes arrive: error bodies go to the string, never to the sink.
  if (transfer->response->status == 0) curl().easy_getinfo(transfer->easy, CURLINFO_RESPONSE_CODE, &transfer->response->status);
  if (transfer->request->sink && transfer->response->status < 300) {
    transfer->request->sink(chunk);
  } else {
    transfer->response->body.append(chunk);
  }
  return chunk.size();
}

bool idempotent(const HttpRequest& request) {
  return request.method == "GET" || request.method == "PUT" || request.method == "DELETE" ||
         request.method == "HEAD" || !request.idempotency_key.empty();
}

bool transient(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:  // a connection dropped mid-handshake; certificate failures have their own codes
      return true;
    default:
      return false;
  }
}

bool transient_status(long status) { return status == 429 || status == 502 || status == 503 || status == 504; }

std::chrono::milliseconds backoff(int attempt) {
  static thread_local std::mt19937 rng{std::random_device{}()};
  double base = 200.0 * (1 << attempt);
  std::uniform_real_distribution<double> jitter(0.5, 1.5);
  return std::chrono::milliseconds(static_cast<long>(base * jitter(rng)));
}

Error transfer_error(CURLcode code, const std::string& detail, const HttpConfig& config, const HttpRequest& request) {
  std::string where = config.base_url + request.path.substr(0, request.path.find('?'));
  std::string what = detail.empty() ? curl().easy_strerror(code) : detail;
  switch (code) {
    case CURLE_PEER_FAILED_VERIFICATION:
      return Error(ExitCode::service, fmt::format("TLS: the service certificate of {} does not verify: {}", config.base_url, what),
                   config.ca_file.empty() ? "pass --ca-file with the service's CA (kiln-service init writes DIR/ca.pem)"
                                          : fmt::format("is {} the CA that issued the service's certificate?", config.ca_file));
    case CURLE_SSL_CONNECT_ERROR:
      return Error(ExitCode::service, fmt::format("TLS handshake with {} failed: {}", config.base_url, what),
                   config.client_cert.empty() ? "check --ca-file / KILN_CA_FILE and that the URL is the service's TLS port"
                                              : fmt::format("is {} accepted by the service?", config.client_cert));
    case CURLE_SSL_CACERT_BADFILE:
      return Error(ExitCode::service, fmt::format("TLS: cannot use CA file {}: {}", config.ca_file, what),
                   "check the --ca-file / KILN_CA_FILE path");
    case CURLE_SSL_CERTPROBLEM:
      return Error(ExitCode::service, fmt::format("TLS: cannot use client certificate {}: {}", config.client_cert, what),
                   "check that --client-cert and --client-key are a PEM certificate and its unencrypted PEM key");
    case CURLE_COULDNT_CONNECT:
      return Error(ExitCode::service, fmt::format("cannot connect to {}: {}", config.base_url, what),
                   "is kiln-service running and is the URL right? (kiln login --service URL)");
    case CURLE_COULDNT_RESOLVE_HOST:
      return Error(ExitCode::service, fmt::format("cannot resolve the service host in {}", config.base_url));
    case CURLE_OPERATION_TIMEDOUT:
      if (what.find("too slow") != std::string::npos || config.connect_timeout_seconds >= config.stall_seconds)
        return Error(ExitCode::service,
                     fmt::format("{} {} stalled: no data moved for {} s", request.method, where, config.stall_seconds),
                     "the network or the service stopped answering; run the command again (--stall-timeout "
                     "SECONDS waits longer)")
            .with_detail(what);
      return Error(ExitCode::service, fmt::format("{} {} timed out: {}", request.method, where, what),
                   "the network or the service is too slow; the command can be run again");
    case CURLE_ABORTED_BY_CALLBACK:
    case CURLE_WRITE_ERROR:
      if (interrupted()) return Error(ExitCode::interrupted, "interrupted");
      return Error(ExitCode::failure, fmt::format("{} {}: cannot store the response: {}", request.method, where, what));
    default:
      return Error(ExitCode::service, fmt::format("{} {} failed: {}", request.method, where, what));
  }
}

}  // namespace

struct HttpClient::Handle {
  CURL* easy = nullptr;
  ~Handle() {
    if (easy) curl().easy_cleanup(easy);
  }
};

HttpClient::HttpClient(HttpConfig config) : config_(std::move(config)), handle_(std::make_unique<Handle>()) {
  while (config_.base_url.ends_with('/')) config_.base_url.pop_back();
  if (!config_.base_url.starts_with("https://"))
    throw Error(ExitCode::usage, fmt::format("service URL {} is not https://", config_.base_url),
                "kiln talks to the service over TLS only: kiln login --service https://HOST:PORT");
}

HttpClient::~HttpClient() = default;

HttpResponse HttpClient::send(const HttpRequest& request) {
  const Curl& c = curl();
  if (!handle_->easy) {
    handle_->easy = c.easy_init();
    if (!handle_->easy) throw Error(ExitCode::failure, "curl_easy_init failed");
  }
  CURL* easy = handle_->easy;
  int attempts = idempotent(request) ? std::max(1, config_.max_attempts) : 1;
  for (int attempt = 0;; ++attempt) {
    // reset keeps live connections and the TLS session cache: reuse across requests.
    c.easy_reset(easy);
    HttpResponse response;
    Transfer transfer{&request, &response, easy};
    char error_buffer[CURL_ERROR_SIZE] = {};
    std::string url = config_.base_url + request.path;
    HeaderList headers;
    if (!config_.bearer_token.empty()) headers.add("Authorization: Bearer " + config_.bearer_token);
    if (!request.idempotency_key.empty()) headers.add("Idempotency-Key: " + request.idempotency_key);
    headers.add("Content-Type: " + request.content_type);
    headers.add("Expect:");
    for (auto& h : request.headers) headers.add(h);

    c.easy_setopt(easy, CURLOPT_URL, url.c_str());
    c.easy_setopt(easy, CURLOPT_HTTPHEADER, headers.list);
    c.easy_setopt(easy, CURLOPT_ERRORBUFFER, error_buffer);
    c.easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    c.easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
    c.easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "https");
    c.easy_setopt(easy, CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_2));
    // A TCP connect or TLS handshake that moves nothing for the stall time is a stall too.
    c.easy_setopt(easy, CURLOPT_CONNECTTIMEOUT, std::max(1L, std::min(config_.connect_timeout_seconds, config_.stall_seconds)));
    c.easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
    c.easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, std::max(config_.stall_seconds, request.stall_seconds));
    c.easy_setopt(easy, CURLOPT_USERAGENT, "kiln/" KILN_VERSION);
    if (!config_.ca_file.empty()) {
      c.easy_setopt(easy, CURLOPT_CAINFO, config_.ca_file.c_str());
      c.easy_setopt(easy, CURLOPT_CAPATH, nullptr);
    }
    if (!config_.client_cert.empty()) {
      c.easy_setopt(easy, CURLOPT_SSLCERT, config_.client_cert.c_str());
      c.easy_setopt(easy, CURLOPT_SSLKEY, config_.client_key.c_str());
      c.easy_setopt(easy, CURLOPT_KEYPASSWD, "");  // never let OpenSSL prompt for a passphrase
    }
    c.easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_data);
    c.easy_setopt(easy, CURLOPT_WRITEDATA, &transfer);
    if (request.method == "GET") {
      c.easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    } else {
      c.easy_setopt(easy, CURLOPT_POSTFIELDS, request.body.data());
      c.easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
      if (request.method != "POST") c.easy_setopt(easy, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    }
    CURLcode code = c.easy_perform(easy);
    if (code == CURLE_OK) {
      c.easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &response.status);
      if (transient_status(response.status) && attempt + 1 < attempts) {
        std::this_thread::sleep_for(backoff(attempt));
        continue;
      }
      return response;
    }
    if (interrupted()) throw Error(ExitCode::interrupted, "interrupted");
    if (transient(code) && attempt + 1 < attempts && !request.sink) {
      std::this_thread::sleep_for(backoff(attempt));
      continue;
    }
    throw transfer_error(code, error_buffer, config_, request);
  }
}

HttpResponse HttpClient::call(const HttpRequest& request) {
  auto response = send(request);
  if (response.status == 401 && config_.bearer_token.empty() && !config_.client_cert.empty()) {
    auto parsed = nlohmann::json::parse(response.body, nullptr, false);
    std::string message = parsed.is_object() && parsed.contains("error") && parsed["error"].is_object()
                              ? parsed["error"].value("message", "")
                              : std::string();
    throw Error(ExitCode::authentication,
                fmt::format("the service refused client certificate {}: {}", config_.client_cert, message),
                "the certificate must chain to a factory CA registered with your tenant (kiln device ca add CA.pem --key CA.key)");
  }
  if (response.status >= 400) throw_http_error(request, response);
  return response;
}

void throw_http_error(const HttpRequest& request, const HttpResponse& response) {
  std::string message;
  auto parsed = nlohmann::json::parse(response.body, nullptr, false);
  if (parsed.is_object() && parsed.contains("error") && parsed["error"].is_object() &&
      parsed["error"].value("message", "") != "")
    message = parsed["error"]["message"].get<std::string>();
  else
    message = response.body.substr(0, 200);
  std::string where = request.path.substr(0, request.path.find('?'));
  switch (response.status) {
    case 401:
      throw Error(ExitCode::authentication, fmt::format("the service refused the token: {}", message),
                  "kiln login --service URL --token-file FILE (or set KILN_TOKEN)");
    case 403:
      throw Error(ExitCode::authentication, fmt::format("not allowed: {}", message), "ask an admin for a token with a wider role");
    case 404:
      throw Error(ExitCode::not_found, message);
    case 409:
      throw Error(ExitCode::conflict, message);
    case 422:
      throw Error(ExitCode::verification_failed, message);
    case 400:
      throw Error(ExitCode::failure, fmt::format("the service rejected the request: {}", message));
    default:
      throw Error(ExitCode::service, fmt::format("{} {} answered HTTP {}: {}", request.method, where, response.status, message));
  }
}

std::string new_idempotency_key() {
  Bytes raw(16);
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1)
    throw Error(ExitCode::failure, "the random generator failed");
  return to_hex(raw);
}

std::string url_encode(std::string_view text) {
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

}  // namespace kiln::transport
