// Image content streams through kiln-service in constant memory: a few hundred MiB uploaded and downloaded
// with the real kiln, the service's peak RSS (VmHWM) bounded; Range answers, resume and a delete mid-stream.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <random>

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "signing/file_digest.hpp"
#include "signing/signer.hpp"
#include "tests/support/fault_proxy.hpp"
#include "tests/support/process.hpp"
#include "tests/support/service_setup.hpp"
#include "transport/http_client.hpp"

using namespace kiln;
using Json = nlohmann::json;

namespace {

constexpr std::int64_t image_size = 256 << 20;
constexpr std::int64_t peak_rss_limit_kib = 64 << 10;

// A sparse file of `size` bytes with random 1 MiB blocks at its start, middle and end (zeros between): the
// ranges the test reads are not all alike, and writing it costs three blocks.
void write_sparse_image(const std::string& path, std::int64_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, size) == 0);
  std::mt19937 rng(13);
  std::string block(1 << 20, '\0');
  for (std::int64_t at : {std::int64_t{0}, size / 2 - 1000, size - static_cast<std::int64_t>(block.size())}) {
    for (auto& c : block) c = static_cast<char>(rng());
    REQUIRE(::pwrite(fd, block.data(), block.size(), at) == static_cast<ssize_t>(block.size()));
  }
  ::close(fd);
}

std::string file_range(const std::string& path, std::int64_t first, std::int64_t length) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(first);
  std::string out(static_cast<std::size_t>(length), '\0');
  in.read(out.data(), length);
  return out;
}

// The peak resident set of a process so far, in KiB (VmHWM in /proc/PID/status).
std::int64_t peak_rss_kib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);)
    if (line.starts_with("VmHWM:")) return std::stoll(line.substr(6));
  return -1;
}

std::string sha256_of(const std::string& path) { return to_hex(file_digest(HashAlg::sha256, path)); }

}  // namespace

TEST_CASE("blob streaming e2e: a 256 MiB image goes up and down with the service's peak RSS under 64 MiB") {
  test::ServiceSetup s;
  auto image = s.dir.file("big.bin");
  write_sparse_image(image, image_size);
  auto id = sha256_of(image);

  auto up = s.json({"image", "upload", image});
  CHECK(up["id"] == id);
  auto back = s.dir.file("back.bin");
  auto down = s.json({"image", "download", id, "-O", back});
  CHECK(down["size"] == image_size);
  CHECK(sha256_of(back) == id);
  std::filesystem::remove(back);
  auto peak = peak_rss_kib(s.service->pid());
  MESSAGE("kiln-service VmHWM after upload and download: " << peak << " KiB");
  CHECK(peak > 0);
  CHECK(peak < peak_rss_limit_kib);

  transport::HttpConfig config;
  config.base_url = s.service->url();
  config.ca_file = (s.data / "ca.pem").string();
  config.bearer_token = test::ServiceSetup::token_of(s.admin_token_file);
  transport::HttpClient client(config);
  auto ranged = [&](const std::string& range) {
    transport::HttpRequest get{.path = "/v1/images/" + id + "/content", .headers = {"Range: " + range}};
    return client.send(get);
  };
  // The same upload serves every check below (no SUBCASE: each would upload it again).
  {
    INFO("a chunk over the 64 MiB request limit is refused with 413 and a message, and nothing is stored");
    auto created = s.json({"image", "show", id});
    transport::HttpRequest put{.method = "PUT",
                               .path = "/v1/images/" + std::string(64, 'a') + "/content?offset=0",
                               .body = std::string((64 << 20) + 1, 'x'),
                               .content_type = "application/octet-stream"};
    auto refused = client.send(put);
    CHECK(refused.status == 413);
    CHECK_MESSAGE(refused.body.find("at most 64 MiB") != std::string::npos, refused.body);
    CHECK(s.json({"image", "show", id}) == created);
  }
  {
    INFO("Range: first bytes, a middle range, a suffix, and unsatisfiable ranges");
    auto first = ranged("bytes=0-99");
    CHECK(first.status == 206);
    CHECK(first.body == file_range(image, 0, 100));
    auto middle_at = image_size / 2 - 500;
    auto middle = ranged(fmt::format("bytes={}-{}", middle_at, middle_at + 99999));
    CHECK(middle.status == 206);
    CHECK(middle.body == file_range(image, middle_at, 100000));
    auto suffix = ranged("bytes=-4096");
    CHECK(suffix.status == 206);
    CHECK(suffix.body == file_range(image, image_size - 4096, 4096));
    auto past = ranged(fmt::format("bytes={}-", image_size));
    CHECK(past.status == 416);
    CHECK(past.body.empty());
    auto several = ranged("bytes=0-1,5-6");
    CHECK(several.status == 416);
  }

  {
    INFO("a download cut mid-way is resumed by kiln with Range and hashes right");
    test::FaultProxy proxy(s.service->port());
    auto o = s.env();
    o.env["KILN_SERVICE"] = "https://127.0.0.1:" + std::to_string(proxy.port());
    proxy.cut_after(image_size / 3, test::FaultProxy::Direction::to_client);
    auto cut = test::kiln({"image", "download", id, "-O", back}, o);
    CHECK(proxy.cut_happened());
    CHECK(cut.exit_code == 5);
    auto kept = static_cast<std::int64_t>(std::filesystem::file_size(back + ".part"));
    CHECK(kept > 0);
    CHECK(kept < image_size);
    proxy.allow();
    auto resumed = test::kiln({"-o", "json", "image", "download", id, "-O", back}, o);
    REQUIRE_MESSAGE(resumed.exit_code == 0, resumed.err);
    CHECK(Json::parse(resumed.out)["resumed_from"] == kept);
    CHECK(sha256_of(back) == id);
  }

  {
    INFO("an image deleted while it streams is still sent whole, and is gone afterwards");
    auto stored = s.data / "images" / "1" / id;
    REQUIRE(std::filesystem::exists(stored));
    transport::HttpRequest get{.path = "/v1/images/" + id + "/content"};
    Hasher hasher(HashAlg::sha256);
    std::int64_t received = 0;
    bool deleted = false;
    get.sink = [&](std::string_view piece) {
      hasher.update(as_bytes(piece));
      received += static_cast<std::int64_t>(piece.size());
      if (!deleted && received > (8 << 20)) {
        auto gone = s.kiln({"image", "delete", id});
        CHECK_MESSAGE(gone.exit_code == 0, gone.err);
        CHECK_FALSE(std::filesystem::exists(stored));
        deleted = true;
      }
    };
    auto response = client.send(get);
    CHECK(response.status == 200);
    CHECK(deleted);
    CHECK(received == image_size);
    CHECK(to_hex(hasher.finish()) == id);
    CHECK(ranged("bytes=0-99").status == 404);
  }
  CHECK(peak_rss_kib(s.service->pid()) < peak_rss_limit_kib);
}
