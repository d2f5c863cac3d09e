// ConnectionGuard: a registry of live TLS connections with deadlines, enforced by a watchdog thread.
#include "service/connection_guard.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <iostream>

#include <openssl/ssl.h>

namespace kiln::service {

using Clock = std::chrono::steady_clock;

struct ConnectionGuard::Connection {
  ConnectionGuard* guard;
  int fd;
  std::string address;
  Phase phase = Phase::handshake;
  Clock::time_point deadline;
  bool counted = false;  // holds a place in per_address_
  bool cut = false;
};

namespace {

void free_connection_data(void* /*parent*/, void* pointer, CRYPTO_EX_DATA* /*data*/, int /*index*/, long /*argl*/,
                          void* /*argp*/) {
  if (pointer) ConnectionGuard::free_connection(static_cast<ConnectionGuard::Connection*>(pointer));
}

// One ex_data slot on SSL (the connection) and one on SSL_CTX (its guard), for the whole process.
int connection_index() {
  static int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, free_connection_data);
  return index;
}

int guard_index() {
  static int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

std::string peer_address(int fd) {
  sockaddr_storage peer{};
  socklen_t length = sizeof peer;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &length) != 0) return "?";
  char text[INET6_ADDRSTRLEN] = "?";
  if (peer.ss_family == AF_INET)
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&peer)->sin_addr, text, sizeof text);
  else if (peer.ss_family == AF_INET6)
    inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&peer)->sin6_addr, text, sizeof text);
  return text;
}

const char* phase_name(int phase) {
  static const char* names[] = {"TLS handshake", "request headers", "request body and response"};
  return names[phase];
}

}  // namespace

ConnectionGuard::ConnectionGuard(ConnectionLimits limits, std::string listener_name)
    : limits_(limits), name_(std::move(listener_name)), watchdog_([this] { watch(); }) {}

ConnectionGuard::~ConnectionGuard() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  watchdog_.join();
}

void ConnectionGuard::attach(httplib::SSLServer& server) {
  SSL_CTX* context = server.ssl_context();
  connection_index();
  SSL_CTX_set_ex_data(context, guard_index(), this);
  SSL_CTX_set_info_callback(context, &ConnectionGuard::info_callback);
  // A renegotiation would restart the handshake inside a request; TLS 1.3 has none anyway.
  SSL_CTX_set_options(context, SSL_OP_NO_RENEGOTIATION);
  server.set_pre_routing_handler([this](const httplib::Request& request, httplib::Response&) {
    enter(request.ssl, Phase::body);
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // cpp-httplib logs a request once its response is written: the connection waits for the next one.
  server.set_logger([this](const httplib::Request& request, const httplib::Response&) {
    static const Phase body = Phase::body;
    enter(request.ssl, Phase::headers, &body);
  });
}

void ConnectionGuard::info_callback(const SSL* ssl, int where, int /*ret*/) {
  auto* guard = static_cast<ConnectionGuard*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), guard_index()));
  if (!guard) return;
  if (where & SSL_CB_HANDSHAKE_START) {
    if (!SSL_get_ex_data(ssl, connection_index())) guard->opened(const_cast<SSL*>(ssl));
  }
  if (where & SSL_CB_HANDSHAKE_DONE) {
    static const Phase handshake = Phase::handshake;
    guard->enter(ssl, Phase::headers, &handshake);
  }
}

void ConnectionGuard::free_connection(Connection* connection) {
  connection->guard->closed(connection);
}

void ConnectionGuard::opened(SSL* ssl) {
  int fd = SSL_get_fd(ssl);
  if (fd < 0) return;
  auto* connection = new Connection{this, fd, peer_address(fd), Phase::handshake, Clock::now(), false, false};
  {
    std::lock_guard lock(mutex_);
    int& count = per_address_[connection->address];
    if (limits_.per_address > 0 && count >= limits_.per_address) {
      if (count == 0) per_address_.erase(connection->address);
      ++refused_;
      // The handshake reads end of file and fails; cpp-httplib then frees the SSL and closes the socket.
      ::shutdown(fd, SHUT_RDWR);
      connection->cut = true;
    } else {
      ++count;
      connection->counted = true;
      connection->deadline = Clock::now() + limits_.handshake;
      live_.insert(connection);
    }
  }
  SSL_set_ex_data(ssl, connection_index(), connection);
}

void ConnectionGuard::enter(const SSL* ssl, Phase to, const Phase* only_from) {
  if (!ssl) return;
  auto* connection = static_cast<Connection*>(SSL_get_ex_data(ssl, connection_index()));
  if (!connection) return;
  std::lock_guard lock(mutex_);
  if (connection->cut || (only_from && connection->phase != *only_from)) return;
  connection->phase = to;
  connection->deadline = Clock::now() + (to == Phase::headers ? limits_.headers
                                         : to == Phase::body  ? limits_.body
                                                              : limits_.handshake);
}

void ConnectionGuard::closed(Connection* connection) {
  {
    std::lock_guard lock(mutex_);
    live_.erase(connection);
    if (connection->counted) {
      auto it = per_address_.find(connection->address);
      if (it != per_address_.end() && --it->second <= 0) per_address_.erase(it);
    }
  }
  delete connection;
}

void ConnectionGuard::watch() {
  auto next_report = Clock::now() + std::chrono::seconds(10);
  std::size_t reported_cut[3] = {0, 0, 0}, reported_refused = 0;
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, std::chrono::milliseconds(100));
    auto now = Clock::now();
    for (auto* connection : live_) {
      if (connection->cut || connection->deadline > now) continue;
      // The worker blocked on this socket wakes up to end of file and closes the connection.
      ::shutdown(connection->fd, SHUT_RDWR);
      connection->cut = true;
      ++cut_[static_cast<int>(connection->phase)];
    }
    // Under attack, one summary line every 10 s rather than a line per connection; written without the
    // lock, so a slow stderr never holds up the connections.
    if (now >= next_report) {
      next_report = now + std::chrono::seconds(10);
      std::string report;
      for (int phase = 0; phase < 3; ++phase)
        if (cut_[phase] != reported_cut[phase])
          report += "kiln-service: " + name_ + ": closed " + std::to_string(cut_[phase] - reported_cut[phase]) +
                    " connection(s) that took too long over the " + phase_name(phase) + "\n";
      if (refused_ != reported_refused)
        report += "kiln-service: " + name_ + ": refused " + std::to_string(refused_ - reported_refused) +
                  " connection(s) from addresses over the per-address limit of " + std::to_string(limits_.per_address) +
                  "\n";
      std::copy(std::begin(cut_), std::end(cut_), std::begin(reported_cut));
      reported_refused = refused_;
      if (!report.empty()) {
        lock.unlock();
        std::cerr << report << std::flush;
        lock.lock();
      }
    }
  }
}

}  // namespace kiln::service
