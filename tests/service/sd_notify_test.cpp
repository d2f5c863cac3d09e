// The sd_notify protocol against a real AF_UNIX datagram socket, as systemd listens for it.
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <string>

#include "service/sd_notify.hpp"
#include "tests/support/scoped_env.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;

namespace {

// A bound datagram socket standing in for systemd's notify socket; NOTIFY_SOCKET names it while it lives.
struct NotifyListener {
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  test::ScopedEnv notify_socket;
  explicit NotifyListener(const std::string& name) : notify_socket("NOTIFY_SOCKET", name.c_str()) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, name.data(), name.size());
    if (name.front() == '@') address.sun_path[0] = '\0';
    auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), length) == 0);
    timeval timeout{2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  }
  ~NotifyListener() { ::close(fd); }
  std::string receive() const {
    char buffer[512];
    auto n = ::recv(fd, buffer, sizeof buffer, 0);
    return n < 0 ? std::string("(nothing)") : std::string(buffer, static_cast<std::size_t>(n));
  }
};

}  // namespace

TEST_CASE("sd_notify: READY=1, RELOADING=1 and STOPPING=1 arrive as datagrams on a socket path") {
  test::TempDir dir;
  NotifyListener systemd(dir.file("notify"));
  CHECK(service::notify_systemd("READY=1"));
  CHECK(systemd.receive() == "READY=1");
  CHECK(service::notify_systemd("RELOADING=1\nMONOTONIC_USEC=12"));
  CHECK(systemd.receive() == "RELOADING=1\nMONOTONIC_USEC=12");
  CHECK(service::notify_systemd("STOPPING=1"));
  CHECK(systemd.receive() == "STOPPING=1");
}

TEST_CASE("sd_notify: an abstract socket is written @name") {
  std::string name = "@kiln-notify-test-" + std::to_string(::getpid());
  NotifyListener systemd(name);
  CHECK(service::notify_systemd("READY=1"));
  CHECK(systemd.receive() == "READY=1");
}

TEST_CASE("sd_notify: without NOTIFY_SOCKET (or with a bad one) nothing is sent and the caller goes on") {
  {
    test::ScopedEnv unset("NOTIFY_SOCKET", nullptr);
    CHECK_FALSE(service::notify_systemd("READY=1"));
  }
  {
    test::ScopedEnv relative("NOTIFY_SOCKET", "relative/path");
    CHECK_FALSE(service::notify_systemd("READY=1"));
  }
  test::TempDir dir;
  test::ScopedEnv nobody("NOTIFY_SOCKET", dir.file("nobody-listens").c_str());
  CHECK_FALSE(service::notify_systemd("READY=1"));
}
