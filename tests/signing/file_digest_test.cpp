// Tests for signing/file_digest: a file's digest read in chunks equals the known digest of its bytes,
// across chunk boundaries, and a missing file is an error naming it.
#include <doctest/doctest.h>

#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/file_digest.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;

TEST_CASE("file_digest: the known SHA-2 digests of small files (FIPS 180-2 \"abc\" and the empty file)") {
  test::TempDir dir;
  write_file_atomic(dir.file("abc"), as_bytes("abc"));
  write_file_atomic(dir.file("empty"), Bytes{});
  CHECK(to_hex(file_digest(HashAlg::sha256, dir.file("abc"))) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(to_hex(file_digest(HashAlg::sha384, dir.file("abc"))) ==
        "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed"
        "8086072ba1e7cc2358baeca134c825a7");
  CHECK(to_hex(file_digest(HashAlg::sha256, dir.file("empty"))) ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST_CASE("file_digest: a file of several chunks hashes like its whole content (one million 'a', and 3 MiB + 1)") {
  test::TempDir dir;
  write_file_atomic(dir.file("million"), Bytes(1000000, 'a'));
  CHECK(to_hex(file_digest(HashAlg::sha256, dir.file("million"))) ==
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Larger than the reader's 1 MiB chunk, and not a multiple of it: every chunk and the short tail count.
  Bytes content(3 * (1u << 20) + 1);
  for (std::size_t i = 0; i < content.size(); ++i) content[i] = static_cast<std::uint8_t>(i * 31 + i / 4096);
  write_file_atomic(dir.file("large"), content);
  CHECK(file_digest(HashAlg::sha256, dir.file("large")) == digest(HashAlg::sha256, content));
  Bytes changed = content;
  changed.back() ^= 0x01;
  write_file_atomic(dir.file("large"), changed);
  CHECK(file_digest(HashAlg::sha256, dir.file("large")) != digest(HashAlg::sha256, content));
}

TEST_CASE("file_digest: a missing file is not_found and names the file") {
  test::TempDir dir;
  CHECK(test::exit_code_of([&] { file_digest(HashAlg::sha256, dir.file("absent.bin")); }) == ExitCode::not_found);
  CHECK_THROWS_WITH_AS(file_digest(HashAlg::sha256, dir.file("absent.bin")), doctest::Contains("absent.bin"), Error);
}
