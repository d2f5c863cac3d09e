// Tests for core/files: atomic writes never leave partial output; chunked reads see every byte.
#include <doctest/doctest.h>
#include <sys/stat.h>

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
