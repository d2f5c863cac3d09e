// kiln_service_lib in-process: strict upload offsets and Range headers; a .part ahead of the row is cut back.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "service/api.hpp"
#include "signing/signer.hpp"
#include "tests/service/service_fixture.hpp"
#include "tests/support/postgres.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;
using namespace kiln::service;
using Json = nlohmann::json;

namespace {

// An image of 3000 bytes registered (nothing received yet), on a SQLite file or the run's PostgreSQL database.
struct ImageFixture : test::ServiceFixture {
  std::string content = [] {
    std::string c(3000, '\0');
    for (std::size_t i = 0; i < c.size(); ++i) c[i] = static_cast<char>(i * 7 + 3);
    return c;
  }();
  std::string sha = to_hex(digest(HashAlg::sha256, as_bytes(content)));

  ImageFixture() : ServiceFixture({.sqlite = "kiln.db"}) {
    REQUIRE(call("POST", "/v1/images", Json{{"sha256", sha}, {"size", content.size()}}.dump()).status == 201);
  }

  Response put(const std::string& offset, const std::string& chunk) {
    return call("PUT", "/v1/images/" + sha + "/content?offset=" + offset, chunk);
  }
  std::filesystem::path part() const { return dir.path() / "images" / std::to_string(tenant) / (sha + ".part"); }
  std::int64_t received() { return Json::parse(call("GET", "/v1/images/" + sha).body)["received"].get<std::int64_t>(); }
};

}  // namespace

TEST_CASE("service images: a malformed upload offset is 400 naming the field, not read leniently") {
  ImageFixture f;
  for (std::string bad :
       {"0abc", "-0", "-1", "+0", " 0", "0x0", "", "1e3", "99999999999999999999999", "9223372036854775807", "0%200"}) {
    auto r = f.put(bad, f.content.substr(0, 10));
    INFO("offset=" << bad << " -> " << r.status << " " << r.body);
    CHECK(r.status == 400);
    CHECK(r.body.find("'offset'") != std::string::npos);
  }
  auto missing = f.call("PUT", "/v1/images/" + f.sha + "/content", f.content.substr(0, 10));
  CHECK(missing.status == 400);
  CHECK(missing.body.find("'offset'") != std::string::npos);
  CHECK(f.received() == 0);
  CHECK(f.put("0", f.content.substr(0, 10)).status == 200);
  CHECK(f.put("00", f.content.substr(0, 10)).status == 409);  // well-formed, but not where the upload continues
  CHECK(f.received() == 10);
}

TEST_CASE("service images: bytes past the recorded offset (a crash mid-chunk) are cut off on resume") {
  ImageFixture f;
  REQUIRE(f.put("0", f.content.substr(0, 1000)).status == 200);
  {
    // What a crash between writing a chunk and recording it leaves: the file ahead of `received`.
    std::ofstream out(f.part(), std::ios::binary | std::ios::app);
    out << f.content.substr(1000, 700);
  }
  REQUIRE(std::filesystem::file_size(f.part()) == 1700);
  CHECK(f.received() == 1000);
  auto resumed = f.put("1000", f.content.substr(1000, 1000));
  INFO(resumed.body);
  CHECK(resumed.status == 200);
  CHECK(std::filesystem::file_size(f.part()) == 2000);
  auto done = f.put("2000", f.content.substr(2000));
  INFO(done.body);
  REQUIRE(done.status == 200);
  CHECK(Json::parse(done.body)["complete"] == true);
  CHECK(f.call("GET", "/v1/images/" + f.sha + "/content").body == f.content);
}

TEST_CASE("service images: a .part shorter than the record (lost bytes) moves the upload back, never forward") {
  ImageFixture f;
  REQUIRE(f.put("0", f.content.substr(0, 1000)).status == 200);
  std::filesystem::resize_file(f.part(), 400);
  auto r = f.put("1000", f.content.substr(1000, 1000));
  CHECK(r.status == 409);
  CHECK(f.received() == 400);
  CHECK(f.put("400", f.content.substr(400)).status == 200);
  CHECK(f.call("GET", "/v1/images/" + f.sha + "/content").body == f.content);
}

TEST_CASE("service images: Range headers are parsed strictly") {
  ImageFixture f;
  REQUIRE(f.put("0", f.content).status == 200);
  auto get = [&](const std::string& range) {
    return f.call("GET", "/v1/images/" + f.sha + "/content", {}, test::Caller().with({{"range", range}}));
  };
  auto tail = get("bytes=-10");
  CHECK(tail.status == 206);
  CHECK(tail.body == f.content.substr(2990));
  CHECK(get("bytes=2990-").body == f.content.substr(2990));
  CHECK(get("bytes=10-19").body == f.content.substr(10, 10));
  CHECK(get("bytes=2990-999999").body == f.content.substr(2990));
  for (std::string bad :
       {"bytes=0abc-", "bytes=-0", "bytes=+1-2", "bytes= 1-2", "bytes=1-2,4-5", "bytes=5-1", "bytes=1-2x",
        "bytes=99999999999999999999999-", "items=1-2", "bytes=", "bytes=-", "bytes=3000-"}) {
    auto r = get(bad);
    INFO(bad << " -> " << r.status);
    CHECK(r.status == 416);
    CHECK(r.headers["Content-Range"] == "bytes */3000");
  }
}
