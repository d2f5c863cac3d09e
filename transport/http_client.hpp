// HTTPS client on libcurl, loaded with dlopen on first use (kiln --version must not pay for libcurl).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::transport {

struct HttpConfig {
  std::string base_url{};     // "https://127.0.0.1:8443"
  std::string bearer_token{};  // never logged
  std::string ca_file{};      // pin: trust only this CA (empty: system store)
  std::string client_cert{};  // PEM certificate for mutual TLS (optional)
  std::string client_key{};   // PEM private key for mutual TLS (optional)
  long connect_timeout_seconds = 10;
  long stall_seconds = 30;  // abort a transfer (or a connect/handshake) that moves < 1 byte/s for this long
  int max_attempts = 4;     // for retryable requests
};

struct HttpRequest {
  std::string method = "GET";
  std::string path{};  // "/v1/devices?limit=10", already percent-encoded
  std::string body{};
  std::string content_type = "application/json";
  std::string idempotency_key{};  // POSTs carrying one may be retried
  std::vector<std::string> headers{};  // extra "Name: value" lines
  // Stall limit for this request when it is longer than the client's (0: the client's): for requests
  // whose answer takes long to compute, such as the last part of a large import.
  long stall_seconds = 0;
  // Receives the body as it arrives instead of HttpResponse::body (downloads).
  std::function<void(std::string_view)> sink{};
};

struct HttpResponse {
  long status = 0;
  std::string body;
};

class HttpClient {
 public:
  explicit HttpClient(HttpConfig config);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Any HTTP status comes back; transport failures throw Error(service) naming what failed.
  // Retries with backoff and jitter only when the request is idempotent (GET, PUT, DELETE, or a
  // POST with an idempotency key) and the failure is transient (connect, timeout, stall, 502/503/504/429).
  HttpResponse send(const HttpRequest& request);
  // send(), then throws for status >= 400 with the service's error message and a matching exit code:
  // 401/403 authentication, 404 not_found, 409 conflict, 422 verification_failed, else service.
  HttpResponse call(const HttpRequest& request);
  const HttpConfig& config() const { return config_; }

 private:
  HttpConfig config_;
  struct Handle;
  std::unique_ptr<Handle> handle_;
};

// Throws the kiln::Error matching an HTTP error response (see HttpClient::call).
[[noreturn]] void throw_http_error(const HttpRequest& request, const HttpResponse& response);

// Random hex string for Idempotency-Key headers: one per logical operation, reused on retry.
std::string new_idempotency_key();
// Percent-encodes a path segment or query value.
std::string url_encode(std::string_view text);

}  // namespace kiln::transport
