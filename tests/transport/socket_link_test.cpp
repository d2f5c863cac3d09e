// Tests for transport/socket_link: whole SMP packets over a Unix stream socket to a real peer (a listening
// socket in a temp directory), cut by the header's length however the bytes arrive; a closed peer, a
// garbage header and a missing socket are board errors naming the address.
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "core/error.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/temp_dir.hpp"
#include "transport/link.hpp"
#include "transport/smp.hpp"

using namespace kiln;
using namespace std::chrono_literals;

namespace {

// A listening Unix socket at `path` standing in for kiln-board-emu: accept() gives the board's end.
class Listener {
 public:
  explicit Listener(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    REQUIRE(path.size() < sizeof addr.sun_path);
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd_, 1) == 0);
  }
  ~Listener() { ::close(fd_); }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  int accept() const { return ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC); }

 private:
  int fd_ = -1;
};

void write_all(int fd, ByteView bytes) {
  REQUIRE(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
}

Bytes read_exactly(int fd, std::size_t size) {
  Bytes out(size);
  std::size_t got = 0;
  while (got < size) {
    ssize_t n = ::read(fd, out.data() + got, size - got);
    REQUIRE(n > 0);
    got += static_cast<std::size_t>(n);
  }
  return out;
}

Bytes packet(std::uint8_t sequence, const std::string& text) {
  smp::Header header;
  header.op = smp::Op::read_response;
  header.sequence = sequence;
  return smp::encode_frame(header, {{"d", text}});
}

// A link connected to a listener in a temp dir, and the board's end of it.
struct Connected {
  test::TempDir dir;
  Listener listener{dir.file("board.sock")};
  std::unique_ptr<Link> link = open_socket_link(dir.file("board.sock"));
  int board = listener.accept();
};

}  // namespace

TEST_CASE("socket_link: packets go out byte for byte and come back whole, however the peer writes them") {
  Connected c;
  auto& link = c.link;
  int board = c.board;
  REQUIRE(board >= 0);
  CHECK(link->address() == "emu:" + c.dir.file("board.sock"));

  Bytes request = smp::encode_frame(smp::Header{}, {{"d", "ping"}});
  link->send(request);
  CHECK(read_exactly(board, request.size()) == request);

  // Two packets in one write, then one split in three writes (inside the header, then inside the body).
  Bytes first = packet(1, "one"), second = packet(2, std::string(3000, 'x')), third = packet(3, "three");
  Bytes both = first;
  both.insert(both.end(), second.begin(), second.end());
  write_all(board, both);
  CHECK(link->receive(1s) == first);
  CHECK(link->receive(1s) == second);
  write_all(board, ByteView(third).first(3));
  CHECK_FALSE(link->receive(10ms));  // a partial header is not a packet yet
  write_all(board, ByteView(third).subspan(3, 7));
  write_all(board, ByteView(third).subspan(10));
  CHECK(link->receive(1s) == third);

  CHECK_FALSE(link->receive(10ms));  // nothing more: the timeout passes
  ::close(board);
  CHECK_THROWS_WITH_AS(link->receive(1s), doctest::Contains("disconnected (connection closed)"), Error);
}

TEST_CASE("socket_link: a header that cannot be SMP is a board error, not a wait for a bogus length") {
  Connected c;
  auto& link = c.link;
  int board = c.board;
  REQUIRE(board >= 0);
  write_all(board, Bytes{0xff, 0, 0xff, 0xff, 0, 0, 0, 0});
  CHECK(test::exit_code_of([&] { link->receive(1s); }) == ExitCode::board);
  ::close(board);
}

TEST_CASE("socket_link: no board at the path, or a path too long for a socket, is refused up front") {
  test::TempDir dir;
  CHECK(test::exit_code_of([&] { open_socket_link(dir.file("absent.sock")); }) == ExitCode::board);
  CHECK_THROWS_WITH_AS(open_socket_link(dir.file("absent.sock")),
                       doctest::Contains(("cannot connect to board emu:" + dir.file("absent.sock")).c_str()), Error);
  CHECK(test::exit_code_of([&] { open_socket_link("/tmp/" + std::string(200, 's')); }) == ExitCode::usage);
}

TEST_CASE("socket_link: the assembler cuts a stream at each header's length") {
  PacketAssembler assembler;
  Bytes a = packet(1, "a"), b = packet(2, "bb");
  CHECK(assembler.empty());
  assembler.append(ByteView(a).first(5));
  CHECK_FALSE(assembler.next());
  assembler.append(ByteView(a).subspan(5));
  assembler.append(b);
  CHECK(assembler.next() == a);
  CHECK(assembler.next() == b);
  CHECK_FALSE(assembler.next());
  CHECK(assembler.empty());
}
