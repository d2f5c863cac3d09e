// Tests for transport/board_api over a scripted board: the OS calls, slot states (and what kiln refuses to
// guess), the windowed resumable upload, and install_image's decisions before anything is erased.
#include <doctest/doctest.h>

#include <map>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/signer.hpp"
#include "tests/support/scripted_link.hpp"
#include "tests/support/temp_dir.hpp"
#include "transport/board_api.hpp"
#include "transport/provisioning_group.hpp"

using namespace kiln;
using test::answer;
using test::quick;
using test::ScriptedLink;

namespace {

// A board answering the OS and Image groups from its fields; it counts the commands it receives.
struct FakeBoard {
  smp::Body images = smp::Body::array();
  std::uint64_t buf_size = 2048, buf_count = 4;
  std::uint64_t offset = 0;           // bytes of the upload it holds
  std::uint64_t resume_at = 0;        // answers the first packet with this offset (a resumed upload)
  std::uint64_t lie_offset = 0;       // answers every packet with this offset when set (a broken board)
  std::map<std::pair<int, int>, int> calls;  // (group, command) -> count
  smp::Body last_state_write;

  SmpClient client() {
    return SmpClient(std::make_unique<ScriptedLink>([this](const smp::Frame& f) { return std::vector{reply(f)}; }),
                     quick());
  }
  int count(std::uint16_t group, std::uint8_t command) const {
    auto it = calls.find({group, command});
    return it == calls.end() ? 0 : it->second;
  }

 private:
  smp::Frame reply(const smp::Frame& f) {
    ++calls[{f.header.group, f.header.command}];
    if (f.header.group == smp::group::os) {
      if (f.header.command == os_command::echo) return answer(f, {{"r", f.body["d"]}});
      if (f.header.command == os_command::mcumgr_params)
        return answer(f, {{"buf_size", buf_size}, {"buf_count", buf_count}});
      if (f.header.command == os_command::info) return answer(f, {{"output", "kiln-emu " + f.body["format"].get<std::string>()}});
      return answer(f, smp::Body::object());
    }
    if (f.header.command == image_command::state) {
      if (f.header.op == smp::Op::write) last_state_write = f.body;
      return answer(f, {{"images", images}});
    }
    if (f.header.command == image_command::upload) {
      auto off = f.body["off"].get<std::uint64_t>();
      if (lie_offset) return answer(f, {{"rc", 0}, {"off", lie_offset}});
      if (off == 0 && resume_at) return answer(f, {{"rc", 0}, {"off", std::exchange(resume_at, 0)}});
      if (off == offset) offset += f.body["data"].get_binary().size();
      return answer(f, {{"rc", 0}, {"off", offset}});
    }
    return answer(f, smp::Body::object());
  }
};

smp::Body slot(std::uint64_t number, const Bytes& hash, bool active, bool confirmed, bool pending = false) {
  return {{"image", 0},         {"slot", number},      {"version", number == 0 ? "1.0.0" : "2.0.0"},
          {"hash", smp::binary(hash)}, {"active", active}, {"confirmed", confirmed},
          {"pending", pending}, {"bootable", true}};
}

Bytes sha256_of(const std::string& text) { return digest(HashAlg::sha256, as_bytes(text)); }

}  // namespace

TEST_CASE("board api: echo, parameters and OS info read the board's answer") {
  FakeBoard board;
  auto client = board.client();
  CHECK(echo(client, "hello") == "hello");
  auto params = read_mcumgr_params(client);
  CHECK(params.buffer_size == 2048);
  CHECK(params.buffer_count == 4);
  CHECK(read_os_info(client) == "kiln-emu a");
  CHECK(read_os_info(client, "sv") == "kiln-emu sv");
}

TEST_CASE("board api: unknown slot states from a board are exit 4 with a clear message") {
  auto board_answering = [](smp::Body body) {
    return [body](const smp::Frame& f) { return std::vector{answer(f, body)}; };
  };
  int sends = 0;
  {
    SmpClient client(std::make_unique<ScriptedLink>(
                         board_answering({{"images", smp::Body::array({{{"slot", 0}, {"active", "maybe"}}})}}), &sends),
                     quick());
    CHECK_THROWS_WITH_AS(read_image_state(client), doctest::Contains("image slot state kiln does not know"), Error);
  }
  {
    SmpClient client(std::make_unique<ScriptedLink>(board_answering({{"splitStatus", 0}}), &sends), quick());
    CHECK_THROWS_WITH_AS(read_image_state(client), doctest::Contains("no images list"), Error);
  }
}

TEST_CASE("board api: slot states read every flag; encrypted and compressed only when the board says") {
  FakeBoard board;
  auto hash = sha256_of("running");
  auto staged = slot(1, sha256_of("staged"), false, false, true);
  staged["encrypted"] = true;
  staged["compressed"] = false;
  board.images = smp::Body::array({slot(0, hash, true, true), staged});
  auto client = board.client();
  auto slots = read_image_state(client);
  REQUIRE(slots.size() == 2);
  CHECK(slots[0].active);
  CHECK(slots[0].confirmed);
  CHECK_FALSE(slots[0].pending);
  CHECK(slots[0].hash == hash);
  CHECK_FALSE(slots[0].encrypted.has_value());
  CHECK(slots[1].pending);
  CHECK(slots[1].version == "2.0.0");
  CHECK(slots[1].encrypted == std::optional<bool>(true));
  CHECK(slots[1].compressed == std::optional<bool>(false));

  // A third slot is not MCUboot's: exit 4 naming it.
  board.images = smp::Body::array({slot(2, hash, false, false)});
  auto third = board.client();
  CHECK_THROWS_WITH_AS(read_image_state(third), doctest::Contains("slot 2 (MCUboot images have slots 0 and 1)"), Error);

  // write_image_state sends the hash only when there is one (confirming the running image).
  board.images = smp::Body::array({slot(0, hash, true, true)});
  auto writer = board.client();
  write_image_state(writer, {}, true);
  CHECK_FALSE(board.last_state_write.contains("hash"));
  CHECK(board.last_state_write["confirm"] == true);
  write_image_state(writer, hash, false);
  CHECK(smp::get_bytes(board.last_state_write, "hash") == hash);
}

TEST_CASE("board api: an upload goes in windows of chunks, resumes where the board stands, refuses what cannot work") {
  test::TempDir dir;
  std::string content(5000, 'x');
  for (std::size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>(i * 7);
  auto path = dir.file("image.bin");
  write_file_atomic(path, as_bytes(content));

  FakeBoard board;
  auto client = board.client();
  std::vector<std::uint64_t> seen;
  auto result = upload_image(client, path, {.image = 0, .chunk_size = 1000},
                             [&](std::uint64_t done, std::uint64_t total) {
                               CHECK(total == 5000);
                               seen.push_back(done);
                             });
  CHECK(result.size == 5000);
  CHECK(result.packets == 5);
  CHECK(result.resumed_from == 0);
  CHECK(result.sha256 == sha256_of(content));
  CHECK(board.offset == 5000);
  CHECK(seen.back() == 5000);

  // A board that already holds the first 3000 bytes answers the first packet with 3000: the rest follows.
  FakeBoard resuming;
  resuming.offset = 3000;
  resuming.resume_at = 3000;
  auto again = resuming.client();
  auto resumed = upload_image(again, path, {.image = 0, .chunk_size = 1000});
  CHECK(resumed.resumed_from == 3000);
  CHECK(resumed.packets == 3);
  CHECK(resuming.offset == 5000);

  // Empty and missing files, a board buffer too small for any data, a board offset past the end.
  write_file_atomic(dir.file("empty.bin"), Bytes{});
  CHECK_THROWS_AS_MESSAGE(upload_image(client, dir.file("empty.bin"), {}), Error, "empty");
  try {
    upload_image(client, dir.file("missing.bin"), {});
    FAIL("a missing file must not upload");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::not_found);
  }
  FakeBoard tiny;
  tiny.buf_size = 64;
  auto small = tiny.client();
  try {
    upload_image(small, path, {});
    FAIL("a 64-byte buffer must be refused");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::board);
    CHECK(std::string(e.what()).find("SMP buffer of only 64 bytes") != std::string::npos);
  }
  FakeBoard liar;
  liar.lie_offset = 9999;
  auto lying = liar.client();
  CHECK_THROWS_WITH_AS(upload_image(lying, path, {}), doctest::Contains("offset 9999 beyond the image size 5000"), Error);
}

TEST_CASE("board api: install decides from the slots before erasing: running, test-running, staged") {
  test::TempDir dir;
  std::string content(700, 'k');
  auto path = dir.file("image.bin");
  write_file_atomic(path, as_bytes(content));
  auto mine = sha256_of(content), other = sha256_of("other"), older = sha256_of("older");
  auto uploads = [](const FakeBoard& b) { return b.count(smp::group::image, image_command::upload); };

  // Already running this image: nothing uploaded; --confirm confirms it.
  FakeBoard running;
  running.images = smp::Body::array({slot(0, mine, true, false)});
  auto c1 = running.client();
  auto r1 = install_image(c1, path, {.upload = {}, .confirm = true});
  CHECK(r1.already_running);
  CHECK(uploads(running) == 0);
  CHECK(running.last_state_write["confirm"] == true);

  // Test-running another image, not confirmed: exit 7 (conflict), nothing uploaded.
  FakeBoard testing;
  testing.images = smp::Body::array({slot(0, other, true, false), slot(1, older, false, true)});
  auto c2 = testing.client();
  try {
    install_image(c2, path, {});
    FAIL("a test-running board must refuse");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::conflict);
    CHECK(std::string(e.what()).find("is test-running 1.0.0") != std::string::npos);
    CHECK(std::string(e.what()).find("Nothing was changed") != std::string::npos);
  }
  CHECK(uploads(testing) == 0);

  // Another image waits in slot 1 for the next boot: conflict too.
  FakeBoard staged;
  staged.images = smp::Body::array({slot(0, other, true, true), slot(1, older, false, false, true)});
  auto c3 = staged.client();
  CHECK_THROWS_WITH_AS(install_image(c3, path, {}), doctest::Contains("marked for the next boot"), Error);
  CHECK(uploads(staged) == 0);

  // This image already waits in slot 1: marked (and reset) again without an upload.
  FakeBoard waiting;
  waiting.images = smp::Body::array({slot(0, other, true, true), slot(1, mine, false, false, true)});
  auto c4 = waiting.client();
  auto r4 = install_image(c4, path, {.upload = {}, .confirm = false, .reset = true});
  CHECK_FALSE(r4.already_running);
  CHECK(r4.reset);
  CHECK(r4.upload.resumed_from == 700);
  CHECK(uploads(waiting) == 0);
  CHECK(smp::get_bytes(waiting.last_state_write, "hash") == mine);
  CHECK(waiting.count(smp::group::os, os_command::reset) == 1);

  // A board that does not list the upload in its secondary slot: exit 4.
  FakeBoard forgetful;
  forgetful.images = smp::Body::array({slot(0, other, true, true)});
  auto c5 = forgetful.client();
  try {
    install_image(c5, path, {});
    FAIL("a board without the uploaded image must be an error");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::board);
    CHECK(std::string(e.what()).find("does not list the uploaded image") != std::string::npos);
  }
  CHECK(uploads(forgetful) == 1);
}

TEST_CASE("board api: image marks round-trip through their names; install reports the mark it set") {
  const std::vector<std::pair<ImageMark, std::string>> all = {{ImageMark::none, "none"},
                                                              {ImageMark::test, "test"},
                                                              {ImageMark::permanent, "permanent"},
                                                              {ImageMark::confirmed, "confirmed"}};
  for (const auto& [mark, name] : all) {
    CHECK(image_mark_name(mark) == name);
    CHECK(parse_image_mark(name) == mark);
  }
  for (const char* unknown : {"", "None", "pending", "test ", "perm"}) CHECK_FALSE(parse_image_mark(unknown).has_value());
  InstallResult uploaded, running;
  running.already_running = true;
  CHECK(install_mark(uploaded, false) == ImageMark::test);
  CHECK(install_mark(uploaded, true) == ImageMark::permanent);
  CHECK(install_mark(running, false) == ImageMark::none);
  CHECK(install_mark(running, true) == ImageMark::confirmed);
}
