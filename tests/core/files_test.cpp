// Tests for core/files: atomic writes never leave partial output; chunked reads see every byte.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <fstream>
#include <limits>
#include <thread>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;

TEST_CASE("files: AtomicFile without commit leaves nothing behind") {
  test::TempDir dir;
  auto target = dir.path() / "out.bin";
  {
    AtomicFile f(target);
    f.write(std::string_view("partial"));
  }
  CHECK_FALSE(std::filesystem::exists(target));
  CHECK(std::filesystem::is_empty(dir.path()));
}

TEST_CASE("files: AtomicFile commit writes the file with the requested mode") {
  test::TempDir dir;
  auto target = dir.path() / "secret.pem";
  write_file_atomic(target, as_bytes("key material"), 0600);
  struct stat st {};
  REQUIRE(stat(target.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(read_text_file(target) == "key material");
}

TEST_CASE("files: refuse-overwrite keeps the existing file and says so") {
  test::TempDir dir;
  auto target = dir.path() / "k.pem";
  write_file_atomic(target, as_bytes("first"), 0600);
  try {
    write_file_atomic(target, as_bytes("second"), 0600, AtomicFile::Overwrite::refuse);
    FAIL("expected a conflict");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::conflict);
    CHECK(std::string(e.what()).find("already exists") != std::string::npos);
  }
  CHECK(read_text_file(target) == "first");
}

TEST_CASE("files: ChunkReader returns the whole file across chunk boundaries") {
  test::TempDir dir;
  auto target = dir.path() / "data";
  Bytes data(10000);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i * 7);
  write_file_atomic(target, data);
  ChunkReader reader(target, 4096);
  CHECK(reader.size() == 10000);
  Bytes back;
  for (auto c = reader.next(); !c.empty(); c = reader.next()) back.insert(back.end(), c.begin(), c.end());
  CHECK(back == data);
}

TEST_CASE("files: read_file_range reads the bytes at an offset, fewer at the end, none past it") {
  test::TempDir dir;
  auto target = dir.path() / "data";
  Bytes data(5000);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i * 13 + 1);
  write_file_atomic(target, data);
  CHECK(read_file_range(target, 0, 32) == Bytes(data.begin(), data.begin() + 32));
  CHECK(read_file_range(target, 4097, 100) == Bytes(data.begin() + 4097, data.begin() + 4197));
  CHECK(read_file_range(target, 4990, 100) == Bytes(data.begin() + 4990, data.end()));
  CHECK(read_file_range(target, 5000, 10).empty());
  CHECK(read_file_range(target, 1u << 31, 10).empty());
  CHECK_THROWS_AS(read_file_range(dir.path() / "absent", 0, 10), Error);
  // A length taken from a hostile header allocates no more than the file holds: a vector of SIZE_MAX bytes
  // throws std::length_error whatever the allocator, so sizing the buffer by the length would fail here.
  constexpr auto hostile = std::numeric_limits<std::size_t>::max();
  CHECK_THROWS_AS(Bytes(hostile, 0), std::length_error);
  CHECK(read_file_range(target, 4990, hostile) == Bytes(data.begin() + 4990, data.end()));
  CHECK(read_file_range(target, 6000, hostile).empty());
  CHECK(read_file_range(target, 0, hostile) == data);
}

TEST_CASE("files: ChunkReader reads a file that grows past its small buffer, and a FIFO in full chunks") {
  test::TempDir dir;
  auto target = dir.path() / "small";
  write_file_atomic(target, Bytes(10, 1));
  ChunkReader reader(target);
  CHECK(reader.size() == 10);
  {  // grows after the reader sized its buffer
    std::ofstream(target, std::ios::app | std::ios::binary) << std::string(40000, 'x');
  }
  std::size_t total = 0;
  for (auto c = reader.next(); !c.empty(); c = reader.next()) total += c.size();
  CHECK(total == 40010);

  auto fifo = dir.path() / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  std::thread writer([&] { std::ofstream(fifo, std::ios::binary) << std::string(100000, 'y'); });
  ChunkReader from_fifo(fifo, 64 * 1024);
  auto first = from_fifo.next();
  CHECK(first.size() == 64 * 1024);  // a FIFO reports no size: its buffer is the whole chunk
  std::size_t fifo_total = first.size();
  for (auto c = from_fifo.next(); !c.empty(); c = from_fifo.next()) fifo_total += c.size();
  writer.join();
  CHECK(fifo_total == 100000);
}

TEST_CASE("files: a missing file is not_found with the path in the message") {
  try {
    read_file("/nonexistent/kiln/file");
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::not_found);
    CHECK(std::string(e.what()).find("/nonexistent/kiln/file") != std::string::npos);
  }
}

TEST_CASE("files: AtomicFile reserve keeps the size at what was written") {
  test::TempDir dir;
  auto target = dir.path() / "big.bin";
  AtomicFile f(target);
  f.reserve(1 << 20);
  f.write(std::string_view("twelve bytes"));
  f.start_writeback();
  f.commit();
  CHECK(std::filesystem::file_size(target) == 12);
  CHECK(read_text_file(target) == "twelve bytes");
}

namespace {
// A character device node of our own (the same device as /dev/null), so a regression replaces only it.
bool make_null_device(const std::filesystem::path& path) {
  return ::mknod(path.c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0;
}
}  // namespace

TEST_CASE("files: AtomicFile writes a character device in place, never renaming over the node") {
  test::TempDir dir;
  auto node = dir.path() / "null";
  if (!make_null_device(node)) {
    MESSAGE("mknod needs root: skipped");
    return;
  }
  CHECK(writes_in_place(node));
  write_file_atomic(node, as_bytes("discarded"));
  struct stat st {};
  REQUIRE(::stat(node.c_str(), &st) == 0);
  CHECK(S_ISCHR(st.st_mode));
  CHECK(std::filesystem::directory_iterator(dir.path()) != std::filesystem::directory_iterator());
  // No temp file left beside it, and no --force needed: there is no file to lose.
  write_file_atomic(node, as_bytes("again"), 0644, AtomicFile::Overwrite::refuse);
  int entries = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir.path())) ++entries;
  CHECK(entries == 1);
}

TEST_CASE("files: AtomicFile writes a FIFO in place and its reader gets every byte") {
  test::TempDir dir;
  auto fifo = dir.path() / "pipe";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  auto received = test::read_fifo_while(fifo, [&] { write_file_atomic(fifo, as_bytes("through the pipe")); });
  CHECK(received == "through the pipe");
  struct stat st {};
  REQUIRE(::stat(fifo.c_str(), &st) == 0);
  CHECK(S_ISFIFO(st.st_mode));
}

TEST_CASE("files: a regular file and a missing path are still replaced by rename") {
  test::TempDir dir;
  CHECK_FALSE(writes_in_place(dir.path() / "missing.bin"));
  write_file_atomic(dir.path() / "file.bin", as_bytes("one"));
  CHECK_FALSE(writes_in_place(dir.path() / "file.bin"));
  CHECK(writes_in_place("-"));
}

TEST_CASE("files: copy_file_to delivers a staged file to a FIFO") {
  test::TempDir dir;
  TemporaryFile staged(dir.path() / "stage");
  write_file_atomic(staged.path(), as_bytes("verified bytes"));
  auto fifo = dir.path() / "pipe";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  auto received = test::read_fifo_while(fifo, [&] { copy_file_to(staged.path(), fifo); });
  CHECK(received == "verified bytes");
}
