// HAProxy (Debian `haproxy`) on 127.0.0.1 in front of several kiln-service instances, for end-to-end tests:
// one TCP-mode frontend per listener (the API, the agents), round-robin over the instances' ports, so TLS
// and the agents' client certificates pass through untouched. Runs unprivileged in the foreground from a
// config file in the test's directory; SIGKILLed when destroyed. The config is the one docs/operations.md
// shows ("Several nodes"), with loopback ports.
#pragma once

#include <doctest/doctest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/loopback.hpp"
#include "tests/support/process.hpp"

namespace kiln::test {

class Haproxy {
 public:
  // name -> the ports of that listener on each instance (e.g. {"api", {8443, 9443}}).
  using Frontends = std::map<std::string, std::vector<int>>;

  Haproxy(const std::filesystem::path& dir, const Frontends& frontends) {
    REQUIRE_MESSAGE(std::filesystem::exists(program), program << " is missing: scripts/setup.sh installs haproxy");
    std::string config =
        "global\n"
        "  maxconn 4096\n"
        "defaults\n"
        "  mode tcp\n"
        "  timeout connect 2s\n"
        "  timeout client 60s\n"
        "  timeout server 60s\n"
        "  retries 3\n"
        "  option redispatch 1\n";
    for (const auto& [name, ports] : frontends) {
      int port = free_port();
      ports_[name] = port;
      config += "frontend " + name + "\n  bind 127.0.0.1:" + std::to_string(port) + "\n  default_backend " + name +
                "\nbackend " + name + "\n  balance roundrobin\n";
      for (std::size_t i = 0; i < ports.size(); ++i)
        config += "  server " + name + std::to_string(i + 1) + " 127.0.0.1:" + std::to_string(ports[i]) +
                  " check inter 1s fall 1 rise 2\n";
    }
    // Its statistics page (CSV), for tests that check which instances served connections.
    stats_port_ = free_port();
    config += "frontend stats\n  mode http\n  bind 127.0.0.1:" + std::to_string(stats_port_) +
              "\n  stats enable\n  stats uri /stats\n";
    auto file = dir / "haproxy.cfg";
    std::ofstream(file) << config;
    auto check = run_process(program, {"-c", "-q", "-f", file.string()});
    REQUIRE_MESSAGE(check.exit_code == 0, check.err << check.out << config);
    process_ = std::make_unique<ChildProcess>(program, std::vector<std::string>{"-db", "-q", "-f", file.string()});
    // Ready when every frontend accepts.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (const auto& frontend : ports_) {
      const int port = frontend.second;  // not a structured binding: doctest's message macros capture it
      int fd = -1;
      while ((fd = connect_loopback(port, 1)) < 0 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      REQUIRE_MESSAGE(fd >= 0, "haproxy does not listen on 127.0.0.1:" << port);
      ::close(fd);
    }
  }

  int port(const std::string& frontend) const { return ports_.at(frontend); }
  // The connections each server of `frontend`'s backend has been given so far (server name -> total; the
  // servers are FRONTEND1, FRONTEND2, ... in the order of the ports), from HAProxy's statistics.
  std::map<std::string, long> sessions(const std::string& frontend) const {
    auto csv = run_process("/usr/bin/curl", {"-s", "--max-time", "5",
                                             "http://127.0.0.1:" + std::to_string(stats_port_) + "/stats;csv"});
    std::map<std::string, long> out;
    std::istringstream lines(csv.out);
    for (std::string line; std::getline(lines, line);) {
      std::vector<std::string> fields;
      std::istringstream cells(line);
      for (std::string cell; std::getline(cells, cell, ',');) fields.push_back(cell);
      // pxname, svname, qcur, qmax, scur, smax, slim, stot, ...
      if (fields.size() > 7 && fields[0] == frontend && fields[1] != "FRONTEND" && fields[1] != "BACKEND")
        out[fields[1]] = std::stol(fields[7]);
    }
    return out;
  }
  std::string url(const std::string& frontend) const { return "https://127.0.0.1:" + std::to_string(port(frontend)); }

 private:
  static constexpr const char* program = "/usr/sbin/haproxy";

  // A port nothing listens on now (the kernel's pick for an ephemeral bind, released again).
  static int free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    socklen_t length = sizeof address;
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    ::close(fd);
    return ntohs(address.sin_port);
  }

  std::map<std::string, int> ports_;
  int stats_port_ = 0;
  std::unique_ptr<ChildProcess> process_;
};

}  // namespace kiln::test
