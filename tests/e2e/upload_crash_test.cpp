// kiln image upload against a kiln-service that is killed (SIGKILL) again and again mid-upload and
// restarted on the same data: the upload resumes each time and completes with the right digest.
#include <doctest/doctest.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <random>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "signing/signer.hpp"
#include "tests/support/process.hpp"
#include "tests/support/service_process.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;
using Json = nlohmann::json;

namespace {

using kiln::test::slurp;

}  // namespace

TEST_CASE("upload crash: kill -9 of the service mid-upload, repeatedly; the upload resumes and completes") {
  test::TempDir dir;
  auto data = dir.path() / "svc";
  auto init = test::run_process(test::bin_path("kiln-service"), {"init", "--dir", data.string()});
  REQUIRE_MESSAGE(init.exit_code == 0, init.err);
  auto service = std::make_unique<test::ServiceProcess>(data);
  int port = service->port();

  constexpr std::size_t size = std::size_t{128} << 20;  // 128 chunks of 1 MiB
  std::string firmware(size, '\0');
  std::mt19937_64 rng(12);
  for (std::size_t i = 0; i < size; i += 8) {
    auto word = rng();
    std::memcpy(firmware.data() + i, &word, 8);
  }
  {
    std::ofstream out(dir.file("big.bin"), std::ios::binary);
    out << firmware;
  }
  test::ProcessOptions o;
  o.env["KILN_SERVICE"] = service->url();
  o.env["KILN_CA_FILE"] = (data / "ca.pem").string();
  o.env["KILN_TOKEN"] = slurp(data / "admin.token");
  o.env["KILN_TOKEN"].pop_back();
  o.timeout_seconds = 300;

  auto received = [&](const std::string& id) -> std::int64_t {
    auto shown = test::kiln({"-o", "json", "image", "show", id}, o);
    if (shown.exit_code != 0) return -1;
    return Json::parse(shown.out)["received"].get<std::int64_t>();
  };
  auto restart = [&] {
    for (int attempt = 0;; ++attempt) {
      try {
        service = std::make_unique<test::ServiceProcess>(data, port);
        return;
      } catch (const std::exception&) {
        if (attempt == 20) throw;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  };

  const std::string id = to_hex(digest(HashAlg::sha256, as_bytes(firmware)));
  auto part = data / "images" / "1" / (id + ".part");
  auto part_size = [&]() -> std::int64_t {
    std::error_code error;
    auto n = std::filesystem::file_size(part, error);
    return error ? -1 : static_cast<std::int64_t>(n);
  };
  // Kill the moment the service's .part grows, i.e. while it handles a chunk it has begun to write: the
  // worst time, when the file may be ahead of the recorded offset. Give up waiting after `patience`.
  auto kill_when_part_grows = [&](std::future<test::ProcessResult>& upload, std::chrono::milliseconds patience) {
    auto seen = part_size();
    auto until = std::chrono::steady_clock::now() + patience;
    while (std::chrono::steady_clock::now() < until) {
      if (upload.wait_for(std::chrono::microseconds(50)) == std::future_status::ready) return false;
      if (auto now = part_size(); now != seen && now > 0) break;
    }
    service->kill_hard();
    return true;
  };

  // Kill until the faults that matter have provably landed (at least 3 kills with the .part ahead of the
  // recorded offset, at least 5 mid-upload), whatever the machine's speed; 60 kills at most.
  int mid_upload_kills = 0, ahead_kills = 0, kills = 0, runs = 0;
  auto enough = [&] { return (ahead_kills >= 3 && mid_upload_kills >= 5) || kills >= 60; };
  bool complete = false;
  std::mt19937 timing(7);
  for (; runs < 40 && !complete; ++runs) {
    auto upload = std::async(std::launch::async, [&] {
      return test::kiln({"-o", "json", "image", "upload", dir.file("big.bin")}, o);
    });
    // Kill while the upload runs; the CLI retries a chunk through a short outage, or gives up and is run again.
    while (!enough()) {
      auto pause = std::chrono::milliseconds(std::uniform_int_distribution<int>(20, 200)(timing));
      if (upload.wait_for(pause) == std::future_status::ready) break;
      if (!kill_when_part_grows(upload, std::chrono::milliseconds(500))) break;
      ++kills;
      auto on_disk = part_size();
      restart();
      auto at = received(id);
      if (at > 0 && at < static_cast<std::int64_t>(size)) ++mid_upload_kills;
      if (on_disk > at && at >= 0) ++ahead_kills;  // the crash left bytes past the recorded offset
    }
    auto result = upload.get();
    INFO("run " << runs << ": exit " << result.exit_code << ": " << result.err);
    // A crash must never cost the upload: what the service assembled always hashes to the image's digest.
    CHECK(result.err.find("digest") == std::string::npos);
    CHECK(result.err.find("does not hash") == std::string::npos);
    if (result.exit_code == 0)
      complete = true;
    else
      CHECK(result.exit_code == 5);  // the service was away for longer than the retries: run it again
  }
  MESSAGE(runs << " upload runs, " << kills << " kills, " << mid_upload_kills << " kills mid-upload, " << ahead_kills
                << " of them left the .part ahead of the recorded offset");
  CHECK(ahead_kills >= 3);
  CHECK(mid_upload_kills >= 5);
  REQUIRE(complete);
  auto shown = test::kiln({"-o", "json", "image", "show", id}, o);
  REQUIRE(shown.exit_code == 0);
  CHECK(Json::parse(shown.out)["complete"] == true);
  auto back = test::kiln({"-o", "json", "image", "download", id, "-O", dir.file("back.bin")}, o);
  REQUIRE_MESSAGE(back.exit_code == 0, back.err);
  CHECK(slurp(dir.file("back.bin")) == firmware);
}
