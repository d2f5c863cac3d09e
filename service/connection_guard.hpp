// Deadlines and a per-address cap for the connections of one TLS listener (slow-client defence).
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include <httplib.h>

namespace kiln::service {

struct ConnectionLimits {
  // Total time, not per read: a client that sends a byte now and then is cut all the same.
  std::chrono::milliseconds handshake{10000};  // TLS handshake, from its first byte to done
  std::chrono::milliseconds headers{10000};    // request line and headers, from handshake or previous response
  std::chrono::milliseconds body{60000};       // request body, handling and response, from the end of the headers
  int per_address = 1000;                      // concurrent connections from one IP address; 0: no cap
};

// Watches every connection of an SSLServer from the start of its TLS handshake until OpenSSL frees it:
// a connection past its deadline is shut down (its worker thread returns at once), and a handshake
// from an address that already holds `per_address` connections is refused. The phases are tracked
// through OpenSSL's info callback (handshake start/done), cpp-httplib's pre-routing handler (headers
// read) and logger (response written); the entry is removed by an SSL ex_data free callback, which
// runs before cpp-httplib closes the socket, so a deadline can never shut down a reused descriptor.
class ConnectionGuard {
 public:
  explicit ConnectionGuard(ConnectionLimits limits, std::string listener_name);
  ~ConnectionGuard();
  ConnectionGuard(const ConnectionGuard&) = delete;
  ConnectionGuard& operator=(const ConnectionGuard&) = delete;

  // Installs the callbacks on `server`. The guard must outlive the server's connections.
  void attach(httplib::SSLServer& server);

  struct Connection;
  static void free_connection(Connection* connection);

 private:
  enum class Phase { handshake, headers, body };
  static void info_callback(const SSL* ssl, int where, int ret);
  void opened(SSL* ssl);
  // Starts `to`'s deadline; with `only_from`, only when the connection is in that phase.
  void enter(const SSL* ssl, Phase to, const Phase* only_from = nullptr);
  void closed(Connection* connection);
  void watch();

  ConnectionLimits limits_;
  std::string name_;
  std::mutex mutex_;
  std::set<Connection*> live_;
  std::map<std::string, int> per_address_;
  std::size_t cut_[3] = {0, 0, 0};
  std::size_t refused_ = 0;
  bool stopping_ = false;
  std::condition_variable wake_;
  std::thread watchdog_;
};

}  // namespace kiln::service
