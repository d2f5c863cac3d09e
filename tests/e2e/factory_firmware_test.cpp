// End to end: the factory firmware step (signed image + SUIT manifest + manifest key) against
// kiln-board-emu processes: init refuses parts that do not agree, run loads and records the
// firmware, and power loss during the upload and during the swap is survived by a re-run.
#include <doctest/doctest.h>

#include <signal.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "core/files.hpp"
#include "signing/image_crypto.hpp"
#include "signing/mcuboot_image.hpp"
#include "tests/support/emulator_process.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;
using nlohmann::json;

namespace {

constexpr std::size_t payload_size = 200000;

// A station with a firmware step: CA, boot key, a signed image 2.0.0, a SUIT manifest (sequence 7)
// signed by its own key, and a profile naming all of them.
struct FirmwareLine {
  test::TempDir dir;
  std::string emu_dir = dir.file("emu");
  std::string profile = dir.file("station.toml");
  std::string image = dir.file("app.signed.bin");
  std::string manifest = dir.file("app.suit");

  test::ProcessResult kiln(std::vector<std::string> args, int timeout_seconds = 120) const {
    test::ProcessOptions options;
    options.env["KILN_EMU_DIR"] = emu_dir;
    options.timeout_seconds = timeout_seconds;
    return test::run_kiln(args, options);
  }
  void ok(const std::vector<std::string>& args) const {
    auto r = kiln(args);
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  }
  std::string encrypt_for;  // an image-encryption key: the factory image is encrypted for it
  void sign(const std::string& key, const std::string& version, const std::string& out) const {
    std::vector<std::string> args{"image",         "sign",         dir.file("app.bin"), out,        "-k", key, "--version",
                                  version,         "--header-size", "0x200",            "--pad-header", "--slot-size",
                                  "0x100000"};
    if (!encrypt_for.empty()) args.insert(args.end(), {"-E", encrypt_for});
    ok(args);
  }
  void make_manifest(const std::string& key, const std::string& for_image, const std::string& out) const {
    ok({"manifest", "create", "--component", for_image, "--uri", "https://fw.example.com/app.bin", "--vendor-domain",
        "example.com", "--class-name", "thermostat-rev-b", "--sequence", "7", "--key", key, "-o", out});
  }
  std::vector<std::string> init_args() const {
    return {"factory", "init", "--ca-key", dir.file("ca.key.pem"), "--ca-cert", dir.file("ca.pem"), "--vendor-root",
            dir.file("vendor.pem"), "--boot-key", dir.file("boot.pem"), "--product", "Thermostat", "--service",
            "https://kiln.example:8443", "--image", image, "--manifest", manifest, "--manifest-key",
            dir.file("suit.pub.pem"), "--force", "-o", profile};
  }
  void setup() {
    for (const char* key : {"ca.key.pem", "boot.pem", "suit.pem", "other.pem"})
      ok({"key", "generate", "-t", "ecdsa-p256", "-o", dir.file(key)});
    ok({"key", "export-public", dir.file("suit.pem"), "-o", dir.file("suit.pub.pem")});
    auto ca = test::run_process("/usr/bin/openssl", {"req", "-x509", "-new", "-key", dir.file("ca.key.pem"), "-subj",
                                                     "/CN=Line 1 CA", "-days", "30", "-out", dir.file("ca.pem")});
    REQUIRE_MESSAGE(ca.exit_code == 0, ca.err);
    test::write_vendor_root(emu_dir, dir.file("vendor.pem"));
    {
      std::ofstream app(dir.file("app.bin"), std::ios::binary);
      for (std::size_t i = 0; i < payload_size; ++i) app.put(static_cast<char>((i * 31) ^ (i >> 8)));
    }
    sign(dir.file("boot.pem"), "2.0.0", image);
    make_manifest(dir.file("suit.pem"), image, manifest);
    auto made = kiln(init_args());
    REQUIRE_MESSAGE(made.exit_code == 0, made.err);
  }
  std::uintmax_t image_size() const { return std::filesystem::file_size(image); }

  // UID -> the board's own view: running version and confirmation, manifest sequence, state.
  json board(const std::string& uid) const {
    auto images = kiln({"-o", "json", "board", "images", "-b", uid});
    REQUIRE_MESSAGE(images.exit_code == 0, images.err);
    auto info = kiln({"-o", "json", "board", "info", "-b", uid});
    REQUIRE_MESSAGE(info.exit_code == 0, info.err);
    json out = json::parse(info.out);
    for (const auto& slot : json::parse(images.out))
      if (slot["active"].get<bool>()) {
        out["running"] = slot["version"];
        out["confirmed"] = slot["confirmed"];
      }
    return out;
  }
  // Every certificate each UID was ever given, from every ledger row.
  std::map<std::string, std::set<std::string>> certificates_per_uid() const {
    auto rows = test::run_process("/usr/bin/sqlite3",
                                  {dir.file("station-ledger.sqlite"),
                                   "SELECT json_extract(content,'$.uid') || ' ' || json_extract(content,'$.serial') FROM "
                                   "ledger WHERE kind = 'unit' AND json_extract(content,'$.serial') != ''"});
    REQUIRE_MESSAGE(rows.exit_code == 0, rows.err);
    std::map<std::string, std::set<std::string>> out;
    std::istringstream in(rows.out);
    for (std::string uid, serial; in >> uid >> serial;) out[uid].insert(serial);
    return out;
  }
  json ledger_rows_for(const std::string& uid) const {
    auto rows = test::run_process("/usr/bin/sqlite3",
                                  {"-json", dir.file("station-ledger.sqlite"),
                                   "SELECT content FROM ledger WHERE kind = 'unit' AND json_extract(content,'$.uid') = '" +
                                       uid + "' AND json_extract(content,'$.result') = 'provisioned'"});
    REQUIRE_MESSAGE(rows.exit_code == 0, rows.err);
    json out = json::array();
    if (rows.out.find('[') == std::string::npos) return out;
    for (const auto& row : json::parse(rows.out)) out.push_back(json::parse(row["content"].get<std::string>()));
    return out;
  }
};

}  // namespace

TEST_CASE("factory init --image --manifest --manifest-key refuses parts that do not agree (exit 3, naming the mismatch)") {
  FirmwareLine line;
  line.setup();
  std::ifstream written(line.profile);
  std::string text((std::istreambuf_iterator<char>(written)), std::istreambuf_iterator<char>());
  CHECK(text.find("[firmware]") != std::string::npos);
  CHECK(text.find("manifest_keys = [") != std::string::npos);  // a TOML array of hex strings
  CHECK(text.find("manifest_threshold = 1") != std::string::npos);

  // The manifest was signed by another key than the one named.
  line.make_manifest(line.dir.file("other.pem"), line.image, line.dir.file("other.suit"));
  auto args = line.init_args();
  args[args.size() - 6] = line.dir.file("other.suit");  // --manifest
  auto wrong_signer = line.kiln(args);
  CHECK(wrong_signer.exit_code == 3);
  CHECK(wrong_signer.err.find("no signature in the envelope verifies with key the manifest key") != std::string::npos);

  // The manifest describes another image.
  line.sign(line.dir.file("boot.pem"), "2.0.1", line.dir.file("newer.signed.bin"));
  args = line.init_args();
  args[args.size() - 8] = line.dir.file("newer.signed.bin");  // --image
  auto wrong_image = line.kiln(args);
  CHECK(wrong_image.exit_code == 3);
  CHECK(wrong_image.err.find("matches no image-digest in the manifest") != std::string::npos);

  // The image was signed with another key than the boot key.
  line.sign(line.dir.file("other.pem"), "2.0.0", line.dir.file("foreign.signed.bin"));
  line.make_manifest(line.dir.file("suit.pem"), line.dir.file("foreign.signed.bin"), line.dir.file("foreign.suit"));
  args = line.init_args();
  args[args.size() - 8] = line.dir.file("foreign.signed.bin");
  args[args.size() - 6] = line.dir.file("foreign.suit");
  auto wrong_boot_key = line.kiln(args);
  CHECK(wrong_boot_key.exit_code == 3);
  CHECK(wrong_boot_key.err.find("does not verify with the boot key") != std::string::npos);

  // The profile still holds the good firmware, and a changed image file is refused at run time.
  std::ifstream again(line.profile);
  std::string after((std::istreambuf_iterator<char>(again)), std::istreambuf_iterator<char>());
  CHECK(after == text);
  std::filesystem::copy_file(line.dir.file("newer.signed.bin"), line.image, std::filesystem::copy_options::overwrite_existing);
  test::EmulatorProcess emulator(line.emu_dir, 1);
  auto changed = line.kiln({"factory", "run", "--all", "--profile", line.profile});
  CHECK(changed.exit_code == 3);
  CHECK_MESSAGE(changed.err.find("changed since the profile was written") != std::string::npos, changed.err);
}

TEST_CASE("factory run: the firmware step loads, swaps, confirms and records the image and its manifest; a re-run skips it") {
  FirmwareLine line;
  line.setup();
  test::EmulatorProcess emulator(line.emu_dir, 2);

  auto dry = line.kiln({"-o", "jsonl", "factory", "run", "--all", "--dry-run", "--profile", line.profile});
  REQUIRE_MESSAGE(dry.exit_code == 0, dry.err);
  CHECK_MESSAGE(dry.out.find(R"("step":"firmware","result":"would-run")") != std::string::npos, dry.out);
  for (const auto& uid : emulator.uids()) CHECK(line.board(uid)["running"] == "1.0.0");

  auto run = line.kiln({"-o", "jsonl", "factory", "run", "--all", "--jobs", "2", "--profile", line.profile});
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  CHECK(run.out.find(R"("step":"firmware","result":"ok")") != std::string::npos);
  for (const auto& uid : emulator.uids()) {
    auto board = line.board(uid);
    CHECK(board["running"] == "2.0.0");
    CHECK(board["confirmed"] == true);
    CHECK(board["sequence"] == 7);
    CHECK(board["state"] == "device-complete");
    auto rows = line.ledger_rows_for(uid);
    REQUIRE(rows.size() == 1);
    CHECK(rows[0]["firmware_version"] == "2.0.0");
    CHECK(rows[0]["manifest_sequence"] == 7);
    CHECK(rows[0]["firmware_sha256"].get<std::string>().size() == 64);
  }
  // A re-run finds each board already provisioned; a power cycle keeps the confirmed image.
  auto again = line.kiln({"-o", "json", "factory", "run", "--all", "--profile", line.profile});
  REQUIRE_MESSAGE(again.exit_code == 0, again.err);
  for (const auto& board : json::parse(again.out)) CHECK(board["result"] == "already-provisioned");
}

TEST_CASE("factory run: power loss during the firmware upload and during the swap; re-runs complete every board") {
  FirmwareLine line;
  line.setup();
  auto size = line.image_size();
  std::vector<std::string> uids;
  {
    // Power goes halfway through the first upload.
    test::EmulatorProcess emulator(line.emu_dir, 3, {"--power-loss-at", std::to_string(size / 2)});
    uids = emulator.uids();
    auto run = line.kiln({"-o", "json", "factory", "run", "--all", "--jobs", "3", "--timeout", "2000", "--profile", line.profile});
    CHECK(run.exit_code == 8);
    CHECK(run.err.find("(firmware)") != std::string::npos);
    CHECK(emulator.wait_exit(10) == 75);
  }
  int losses = 0;
  for (int cycle = 0; cycle < 3; ++cycle) {
    CAPTURE(cycle);
    // Power goes halfway through copying the new image into the primary slot (a swap), or in
    // the upload that resumes where the first one stopped.
    test::EmulatorProcess emulator(line.emu_dir, 3, {"--power-loss-at", std::to_string(size + size / 2)});
    auto run = line.kiln({"-o", "json", "factory", "run", "--all", "--jobs", "1", "--timeout", "2000", "--profile", line.profile});
    // The first cycle must be cut (the boards still need their firmware): a cycle that completes before
    // any power loss proves nothing.
    if (cycle > 0 && run.exit_code == 0) break;
    REQUIRE_MESSAGE(run.exit_code == 8, run.err);
    CHECK(emulator.wait_exit(10) == 75);  // the power loss happened
    ++losses;
    // Where it landed: in the firmware step of a board, as the station reports it.
    bool firmware_failed = false;
    for (const auto& board : json::parse(run.out)) firmware_failed |= board.value("failed_step", "") == "firmware";
    CHECK_MESSAGE(firmware_failed, run.out);
  }
  CHECK(losses >= 1);
  // A board that lost power mid-swap boots the old image, with the new one still in slot 1.
  test::EmulatorProcess emulator(line.emu_dir, 3);
  auto rerun = line.kiln({"-o", "json", "factory", "run", "--all", "--jobs", "3", "--profile", line.profile});
  REQUIRE_MESSAGE(rerun.exit_code == 0, rerun.err);
  auto verify = line.kiln({"factory", "ledger", "verify", "--profile", line.profile});
  CHECK_MESSAGE(verify.exit_code == 0, verify.err);
  auto certificates = line.certificates_per_uid();
  for (const auto& uid : uids) {
    auto board = line.board(uid);
    CHECK(board["running"] == "2.0.0");
    CHECK(board["confirmed"] == true);
    CHECK(board["sequence"] == 7);
    CHECK(board["state"] == "device-complete");
    CHECK(line.ledger_rows_for(uid).size() >= 1);  // no board in its final state without a row
    CHECK(certificates[uid].size() == 1);          // and never two certificates for one UID
  }
  auto stats = json::parse(line.kiln({"-o", "json", "factory", "ledger", "stats", "--profile", line.profile}).out);
  CHECK(stats["units_provisioned"] == 3);
  CHECK(stats["failures_per_step"]["firmware"].get<int>() >= 3);
}

TEST_CASE("factory run: a link cut anywhere in the firmware step is resumed by a re-run") {
  FirmwareLine line;
  line.setup();
  auto size = line.image_size();
  std::set<std::string> failed_steps;
  int cut_number = 0;
  for (std::uintmax_t cut : {size / 3, size + size / 50, size + size / 50 + 1500, size + size / 50 + 3000}) {
    CAPTURE(cut);
    // A fresh board for each cut, from the same silicon vendor (the profile's vendor root).
    std::string boards = line.dir.file("cut" + std::to_string(cut_number++));
    std::filesystem::create_directories(boards);
    for (const char* file : {"vendor-root.pem", "vendor-root.key.pem"})
      std::filesystem::copy_file(std::filesystem::path(line.emu_dir) / file, std::filesystem::path(boards) / file);
    test::EmulatorProcess emulator(boards, 1, {"--drop-after-bytes", std::to_string(cut)});
    test::ProcessOptions options;
    options.env["KILN_EMU_DIR"] = boards;
    auto first = test::run_kiln({"-o", "json", "factory", "run", "--all", "--timeout", "2000", "--profile", line.profile},
                                options);
    if (first.exit_code != 0) {
      CHECK(first.exit_code == 4);  // one board: its failure's own code (board link)
      failed_steps.insert(json::parse(first.out).at(0).value("failed_step", ""));
    }
    CAPTURE(first.out);
    auto again = test::run_kiln({"-o", "json", "factory", "run", "--all", "--profile", line.profile}, options);
    // A cut past the first run's last byte lands in the re-run (the emulator counts bytes across
    // connections): one more run resumes it.
    if (first.exit_code == 0 && again.exit_code == 4)
      again = test::run_kiln({"-o", "json", "factory", "run", "--all", "--profile", line.profile}, options);
    REQUIRE_MESSAGE(again.exit_code == 0, again.err);
    auto uid = emulator.uids().at(0);
    auto board = json::parse(test::run_kiln({"-o", "json", "board", "info", "-b", uid}, options).out);
    auto images = json::parse(test::run_kiln({"-o", "json", "board", "images", "-b", uid}, options).out);
    CHECK(board["sequence"] == 7);
    CHECK(board["state"] == "device-complete");
    CHECK(images.at(0)["version"] == "2.0.0");
    CHECK(images.at(0)["confirmed"] == true);
  }
  MESSAGE("link cut during: " << fmt::format("{}", fmt::join(failed_steps, ", ")));
  CHECK(failed_steps.count("firmware") == 1);
}

TEST_CASE("factory run: kill -9 of the station during the firmware step; a re-run completes every board") {
  FirmwareLine line;
  line.setup();
  // Each request takes ~120 ms, so the firmware step lasts ~2 s. The station is killed (SIGKILL) as soon as
  // the first board's attest step reports ok: its firmware step has begun, and no board's can have ended.
  test::EmulatorProcess emulator(line.emu_dir, 3, {"--latency-us", "60000"});
  auto killed = test::kill_factory_run_at(line.emu_dir, line.profile, 3, "attest");
  // Where the kill landed: in the firmware step. No firmware event was written, no board runs the new image
  // (its slots still hold the old one as active), and the ledger has no provisioned row.
  CHECK(killed.out.find("\"step\":\"firmware\"") == std::string::npos);
  for (const auto& uid : emulator.uids()) {
    CAPTURE(uid);
    CHECK(line.board(uid)["running"] != "2.0.0");
    CHECK(line.ledger_rows_for(uid).empty());
  }
  auto rerun = line.kiln({"-o", "json", "factory", "run", "--all", "--jobs", "3", "--profile", line.profile});
  REQUIRE_MESSAGE(rerun.exit_code == 0, rerun.err);
  CHECK(line.kiln({"factory", "ledger", "verify", "--profile", line.profile}).exit_code == 0);
  auto certificates = line.certificates_per_uid();
  for (const auto& uid : emulator.uids()) {
    auto board = line.board(uid);
    CHECK(board["running"] == "2.0.0");
    CHECK(board["confirmed"] == true);
    CHECK(board["sequence"] == 7);
    CHECK(line.ledger_rows_for(uid).size() >= 1);  // one per attempt that reached the ledger step
    CHECK(certificates[uid].size() == 1);
  }
}

TEST_CASE("factory run: an encrypted factory image and its manifest install on boards given the product's key") {
  FirmwareLine line;
  const std::string product_key = KILN_VECTORS_DIR "/mcuboot-more/enc-p256.pem";
  line.encrypt_for = product_key;
  line.setup();
  {
    Bytes image = read_file(line.image);
    REQUIRE((mcuboot::parse_header(image).flags & mcuboot::flag_encrypted_aes128) != 0);
  }
  std::ofstream(line.profile, std::ios::app) << "\n[encryption]\nmode = \"install\"\nkey = \"" << product_key << "\"\n";
  test::EmulatorProcess emulator(line.emu_dir, 2);

  auto run = line.kiln({"-o", "jsonl", "factory", "run", "--all", "--jobs", "2", "--profile", line.profile});
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  CHECK(run.out.find(R"("step":"encryption-key","result":"ok")") != std::string::npos);
  CHECK(run.out.find(R"("step":"firmware","result":"ok")") != std::string::npos);
  const Bytes app = read_file(line.dir.file("app.bin"));
  const std::string image_sha = to_hex(digest(HashAlg::sha256, read_file(line.image)));
  for (const auto& uid : emulator.uids()) {
    CAPTURE(uid);
    auto board = line.board(uid);
    CHECK(board["running"] == "2.0.0");
    CHECK(board["confirmed"] == true);
    CHECK(board["sequence"] == 7);  // 64:8 took the manifest of the encrypted image
    CHECK(board["state"] == "device-complete");
    // MCUboot decrypted it into slot 0 with the key the station installed.
    Bytes primary = read_file(line.emu_dir + "/" + uid + "/primary.bin");
    auto header = mcuboot::parse_header(primary);
    CHECK(Bytes(primary.begin() + header.header_size, primary.begin() + header.header_size + app.size()) == app);
    auto rows = line.ledger_rows_for(uid);
    REQUIRE(rows.size() == 1);
    CHECK(rows[0]["firmware_version"] == "2.0.0");
    CHECK(rows[0]["manifest_sequence"] == 7);
    CHECK(rows[0]["firmware_sha256"] == image_sha);
  }
  // A re-run finds each board provisioned: its manifest still matches the delivered (encrypted) image.
  auto again = line.kiln({"-o", "json", "factory", "run", "--all", "--profile", line.profile});
  REQUIRE_MESSAGE(again.exit_code == 0, again.err);
  for (const auto& board : json::parse(again.out)) CHECK(board["result"] == "already-provisioned");
}

TEST_CASE("factory run: an encrypted factory image on a line that gives boards no key fails the firmware step") {
  FirmwareLine line;
  line.encrypt_for = KILN_VECTORS_DIR "/mcuboot-more/enc-p256.pem";
  line.setup();
  test::EmulatorProcess emulator(line.emu_dir, 1);
  auto run = line.kiln({"-o", "json", "factory", "run", "--all", "--profile", line.profile});
  CHECK(run.exit_code != 0);
  CHECK_MESSAGE(run.err.find("no image-encryption key") != std::string::npos, run.err);
  for (const auto& uid : emulator.uids()) CHECK(line.board(uid)["running"] == "1.0.0");
}
