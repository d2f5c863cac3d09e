// Streamed bodies over blob files: slices across pieces, bounded sends, files that outlive their names,
// spooled request bodies.
#include "service/blob_file.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "tests/support/temp_dir.hpp"

using namespace kiln;
using namespace kiln::service;

namespace {

std::shared_ptr<const BlobFile> file_of(const test::TempDir& dir, const std::string& name, const std::string& content) {
  auto path = dir.path() / name;
  std::ofstream(path, std::ios::binary) << content;
  return BlobFile::open(path);
}

// Everything `body` sends from `offset`, `length` bytes, and the size of the largest piece handed over.
std::pair<std::string, std::size_t> sent(const StreamedBody& body, std::int64_t offset, std::int64_t length) {
  std::string out;
  std::size_t largest = 0;
  bool ok = body.send(offset, length, [&](const char* data, std::size_t n) {
    out.append(data, n);
    largest = std::max(largest, n);
    return true;
  });
  CHECK(ok);
  return {out, largest};
}

}  // namespace

TEST_CASE("blob file: a body of file and byte pieces is sliced and sent like the bytes it stands for") {
  test::TempDir dir;
  std::string text(200000, '\0');
  for (std::size_t i = 0; i < text.size(); ++i) text[i] = static_cast<char>(i * 13 + i / 251);
  auto file = file_of(dir, "blob", text);
  // The delivery layout: file[0, 1000) + a replaced area + file[1500, end).
  std::string area = "AREA-REPLACED";
  StreamedBody body{
      {{file, 0, 1000}, {nullptr, 0, static_cast<std::int64_t>(area.size()), area}, {file, 1500, 198500}}};
  std::string whole = text.substr(0, 1000) + area + text.substr(1500);
  REQUIRE(body.size() == static_cast<std::int64_t>(whole.size()));

  auto [all, largest] = sent(body, 0, body.size());
  CHECK(all == whole);
  CHECK(largest <= 64 * 1024);
  // Offsets and lengths that start and end inside each piece and across their edges.
  for (std::int64_t first : {0, 1, 999, 1000, 1005, 1013, 1100, 150000, 198999}) {
    for (std::int64_t last : {first, first + 12, first + 70000, body.size() - 1}) {
      if (last >= body.size()) continue;
      auto expected = whole.substr(static_cast<std::size_t>(first), static_cast<std::size_t>(last - first + 1));
      auto slice = body.slice(first, last);
      CHECK(slice.size() == last - first + 1);
      CHECK(sent(slice, 0, slice.size()).first == expected);
      CHECK(sent(body, first, last - first + 1).first == expected);
    }
  }
  // A receiver that refuses stops the send.
  int calls = 0;
  CHECK_FALSE(body.send(0, body.size(), [&](const char*, std::size_t) { return ++calls < 2; }));
  CHECK(calls == 2);
}

TEST_CASE("blob file: an open blob is read whole after its name is removed; a file shorter than its piece fails") {
  test::TempDir dir;
  std::string text(100000, 'k');
  auto file = file_of(dir, "blob", text);
  std::filesystem::remove(dir.path() / "blob");
  CHECK(sent(StreamedBody::of_file(file), 0, file->size()).first == text);
  // A piece that claims more than the file holds: the send stops instead of sending anything else.
  StreamedBody longer{{{file, 0, file->size() + 10}}};
  std::string got;
  CHECK_FALSE(longer.send(0, longer.size(), [&](const char* data, std::size_t n) {
    got.append(data, n);
    return true;
  }));
  CHECK(got.size() < text.size() + 10);
  CHECK_THROWS_AS(BlobFile::open(dir.path() / "blob"), ApiError);
}

TEST_CASE("blob file: a spooled request body is kept in a file without a name; a body cut off is refused") {
  test::TempDir dir;
  std::string body(300000, 'b');
  auto reader = [&](const ByteReceiver& receive) {
    for (std::size_t at = 0; at < body.size(); at += 4096)
      if (!receive(body.data() + at, std::min<std::size_t>(4096, body.size() - at))) return false;
    return true;
  };
  auto spooled = BlobFile::spool(reader, dir.path() / "blobs");
  CHECK(spooled->size() == static_cast<std::int64_t>(body.size()));
  CHECK(spooled->read_all() == body);
  CHECK(std::filesystem::is_empty(dir.path() / "blobs"));  // nothing left behind under any name
  auto cut = [&](const ByteReceiver& receive) { return receive(body.data(), 10) && false; };
  try {
    BlobFile::spool(cut, dir.path() / "blobs");
    FAIL("a cut-off body was accepted");
  } catch (const ApiError& e) {
    CHECK(e.status == 400);
  }
}
