// Agent check-in load for bench/fleet.sh: threads that POST /v1/agent/check-in over mutual TLS to one or more
// kiln-service agent listeners on 127.0.0.1, on a kept-alive connection, on a fresh connection with a full
// handshake each time, or on a fresh connection resuming the previous session (TLS 1.3 ticket), as devices
// that poll do. Closed loop by default; with --rate, each request has its scheduled time and its latency counts
// from then (a stalled service is not hidden by requests that were never sent). Prints one JSON line.
// Stops after --seconds, --requests, or at SIGTERM/SIGINT (for a load that runs while something else happens).
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/loopback.hpp"  // the loopback connection the tests use too

namespace {

using Clock = std::chrono::steady_clock;
std::atomic<bool> stopping{false};
void on_signal(int) { stopping = true; }

struct Options {
  std::vector<int> ports;
  std::string ca, cert, key, mode = "resumed", body = R"({"version":"1.0.0"})";
  int threads = 4;
  double seconds = 10, rate = 0;
  long requests = 0;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "kiln_bench_checkin: %s\nusage: kiln_bench_checkin --port P[,P...] --ca FILE --cert FILE --key FILE\n"
               "  [--mode keepalive|fresh|resumed] [--threads N] [--seconds S] [--requests N] [--rate PER_SECOND]\n"
               "  [--body JSON]\n",
               why);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string name = argv[i];
    if (i + 1 >= argc) usage(("a value is missing after " + name).c_str());
    std::string value = argv[++i];
    if (name == "--port") {
      for (std::size_t at = 0; at <= value.size();) {
        auto comma = value.find(',', at);
        if (comma == std::string::npos) comma = value.size();
        o.ports.push_back(std::atoi(value.substr(at, comma - at).c_str()));
        at = comma + 1;
      }
    } else if (name == "--ca") o.ca = value;
    else if (name == "--cert") o.cert = value;
    else if (name == "--key") o.key = value;
    else if (name == "--mode") o.mode = value;
    else if (name == "--threads") o.threads = std::atoi(value.c_str());
    else if (name == "--seconds") o.seconds = std::atof(value.c_str());
    else if (name == "--requests") o.requests = std::atol(value.c_str());
    else if (name == "--rate") o.rate = std::atof(value.c_str());
    else if (name == "--body") o.body = value;
    else usage(("unknown option " + name).c_str());
  }
  if (o.ports.empty() || o.ca.empty() || o.cert.empty() || o.key.empty()) usage("--port, --ca, --cert and --key are needed");
  if (o.mode != "keepalive" && o.mode != "fresh" && o.mode != "resumed") usage("--mode is keepalive, fresh or resumed");
  if (o.threads < 1) usage("--threads must be at least 1");
  return o;
}

struct Result {
  std::vector<double> latencies_ms;
  long errors = 0, resumed = 0, handshakes = 0;
};

class Worker {
 public:
  Worker(const Options& options, SSL_CTX* ctx, int port) : o_(options), ctx_(ctx), port_(port) {
    std::string close = o_.mode == "keepalive" ? "" : "Connection: close\r\n";
    request_ = "POST /v1/agent/check-in HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               "Content-Length: " + std::to_string(o_.body.size()) + "\r\n" + close + "\r\n" + o_.body;
  }
  ~Worker() {
    disconnect(false);
    if (session_) SSL_SESSION_free(session_);
  }

  // One check-in; false on any failure (the connection is dropped).
  bool check_in(Result& result) {
    if (!ssl_ && !connect(result)) return false;
    if (SSL_write(ssl_, request_.data(), static_cast<int>(request_.size())) <= 0 || !read_response()) {
      disconnect(false);
      return false;
    }
    if (o_.mode != "keepalive") disconnect(true);
    return true;
  }

 private:
  bool connect(Result& result) {
    int fd = kiln::test::connect_loopback(port_);
    if (fd < 0) return false;
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd);
    if (o_.mode == "resumed" && session_) SSL_set_session(ssl_, session_);
    if (SSL_connect(ssl_) != 1) {
      disconnect(false);
      return false;
    }
    ++result.handshakes;
    if (SSL_session_reused(ssl_)) ++result.resumed;
    return true;
  }

  bool read_response() {
    std::string in;
    char buf[4096];
    std::size_t header_end = std::string::npos;
    while (header_end == std::string::npos) {
      int n = SSL_read(ssl_, buf, sizeof buf);
      if (n <= 0) return false;
      in.append(buf, static_cast<std::size_t>(n));
      header_end = in.find("\r\n\r\n");
    }
    if (in.compare(0, 12, "HTTP/1.1 200") != 0) return false;
    auto at = in.find("Content-Length: ");
    if (at == std::string::npos || at > header_end) return false;
    std::size_t want = header_end + 4 + std::strtoul(in.c_str() + at + 16, nullptr, 10);
    while (in.size() < want) {
      int n = SSL_read(ssl_, buf, sizeof buf);
      if (n <= 0) return false;
      in.append(buf, static_cast<std::size_t>(n));
    }
    return true;
  }

  // Keeps the session (with its ticket, which arrived with the answer) when the exchange went well; a
  // connection freed without close_notify would make OpenSSL mark the session not resumable.
  void disconnect(bool clean) {
    if (!ssl_) return;
    if (clean && o_.mode == "resumed") {
      if (session_) SSL_SESSION_free(session_);
      session_ = SSL_get1_session(ssl_);
    }
    if (clean) SSL_shutdown(ssl_);
    int fd = SSL_get_fd(ssl_);
    SSL_free(ssl_);
    ssl_ = nullptr;
    ::close(fd);
    ERR_clear_error();
  }

  const Options& o_;
  SSL_CTX* ctx_;
  int port_;
  std::string request_;
  SSL* ssl_ = nullptr;
  SSL_SESSION* session_ = nullptr;
};

double percentile(std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  auto index = static_cast<std::size_t>(p / 100.0 * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(index, sorted.size() - 1)];
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  std::signal(SIGPIPE, SIG_IGN);
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (SSL_CTX_load_verify_locations(ctx, o.ca.c_str(), nullptr) != 1 ||
      SSL_CTX_use_certificate_chain_file(ctx, o.cert.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, o.key.c_str(), SSL_FILETYPE_PEM) != 1) {
    std::fprintf(stderr, "kiln_bench_checkin: cannot load %s, %s or %s\n", o.ca.c_str(), o.cert.c_str(), o.key.c_str());
    return 1;
  }
  std::vector<Result> results(static_cast<std::size_t>(o.threads));
  std::atomic<long> started{0};
  auto begin = Clock::now();
  auto deadline = begin + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  std::vector<std::thread> threads;
  for (int t = 0; t < o.threads; ++t) {
    threads.emplace_back([&, t] {
      Worker worker(o, ctx, o.ports[static_cast<std::size_t>(t) % o.ports.size()]);
      auto& result = results[static_cast<std::size_t>(t)];
      // With a rate, this thread's share: one request every `interval`, from its own offset.
      auto interval = o.rate > 0 ? std::chrono::duration<double>(o.threads / o.rate) : std::chrono::duration<double>(0);
      auto next = begin + std::chrono::duration_cast<Clock::duration>(interval * (static_cast<double>(t) / o.threads));
      while (!stopping && Clock::now() < deadline && (o.requests == 0 || started++ < o.requests)) {
        auto scheduled = Clock::now();
        if (o.rate > 0) {
          std::this_thread::sleep_until(next);
          scheduled = next;
          next += std::chrono::duration_cast<Clock::duration>(interval);
        }
        bool ok = worker.check_in(result);
        auto took = std::chrono::duration<double, std::milli>(Clock::now() - scheduled).count();
        if (ok) result.latencies_ms.push_back(took);
        else ++result.errors;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - begin).count();
  Result all;
  for (auto& r : results) {
    all.latencies_ms.insert(all.latencies_ms.end(), r.latencies_ms.begin(), r.latencies_ms.end());
    all.errors += r.errors;
    all.resumed += r.resumed;
    all.handshakes += r.handshakes;
  }
  std::sort(all.latencies_ms.begin(), all.latencies_ms.end());
  std::printf(
      "{\"mode\":\"%s\",\"threads\":%d,\"instances\":%zu,\"requests\":%zu,\"errors\":%ld,\"seconds\":%.2f,"
      "\"per_second\":%.0f,\"handshakes\":%ld,\"resumed\":%ld,\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"max_ms\":%.2f}\n",
      o.mode.c_str(), o.threads, o.ports.size(), all.latencies_ms.size(), all.errors, elapsed,
      static_cast<double>(all.latencies_ms.size()) / elapsed, all.handshakes, all.resumed,
      percentile(all.latencies_ms, 50), percentile(all.latencies_ms, 99),
      all.latencies_ms.empty() ? 0 : all.latencies_ms.back());
  SSL_CTX_free(ctx);
  return all.latencies_ms.empty() ? 1 : 0;
}
