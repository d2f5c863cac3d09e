// End to end: bin/kiln board ... against bin/kiln-board-emu, including unplug, hang, corruption and power loss.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/openssl_ptr.hpp"
#include "signing/signer.hpp"
#include "transport/board_api.hpp"
#include "transport/link.hpp"
#include "transport/provisioning_group.hpp"
#include "tests/support/emulator_process.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;
using nlohmann::json;

namespace {

// An (unsigned) MCUboot-formatted image: header with version major.0.0, then payload.
std::string write_image(const test::TempDir& dir, const std::string& name, std::uint8_t major, std::size_t size) {
  Bytes image;
  put_le32(image, 0x96f3b83d);
  put_le32(image, 0);
  put_le16(image, 32);
  put_le16(image, 0);
  put_le32(image, static_cast<std::uint32_t>(size));
  put_le32(image, 0);
  image.push_back(major);
  image.push_back(0);
  put_le16(image, 0);
  put_le32(image, 0);
  put_le32(image, 0);
  for (std::size_t i = 0; i < size; ++i) image.push_back(static_cast<std::uint8_t>(i * 7));
  write_file_atomic(dir.file(name), image);
  return dir.file(name);
}

test::ProcessOptions emu_env(const test::TempDir& dir) {
  test::ProcessOptions options;
  options.env["KILN_EMU_DIR"] = dir.file("emu");
  return options;
}

std::string active_version(const test::TempDir& dir) {
  auto r = test::kiln({"-o", "json", "board", "images"}, emu_env(dir));
  REQUIRE(r.exit_code == 0);
  for (const auto& slot : json::parse(r.out))
    if (slot["active"].get<bool>()) return slot["version"];
  return "";
}

}  // namespace

TEST_CASE("kiln board: list shows every emulated board; one-board commands refuse to guess") {
  test::TempDir dir;
  test::EmulatorProcess emu(dir.file("emu"), 2);
  auto list = test::kiln({"-o", "json", "board", "list"}, emu_env(dir));
  REQUIRE(list.exit_code == 0);
  auto boards = json::parse(list.out);
  REQUIRE(boards.size() == 2);
  for (const auto& b : boards) {
    CHECK(b["state"] == "blank");
    CHECK(b["firmware"] == "1.0.0");
    CHECK(b["status"] == "ok");
  }
  auto refused = test::kiln({"board", "info"}, emu_env(dir));
  CHECK(refused.exit_code == 2);
  CHECK(refused.err.find(emu.uids()[0]) != std::string::npos);
  CHECK(refused.err.find(emu.uids()[1]) != std::string::npos);

  auto info = test::kiln({"-o", "json", "board", "info", "-b", emu.uids()[1]}, emu_env(dir));
  REQUIRE(info.exit_code == 0);
  CHECK(json::parse(info.out)["uid"] == emu.uids()[1]);
  auto by_socket = test::kiln({"-o", "json", "board", "echo", "ping", "-b", "emu:" + emu.sockets()[0]});
  REQUIRE(by_socket.exit_code == 0);
  CHECK(json::parse(by_socket.out)["echo"] == "ping");
  auto unknown = test::kiln({"board", "info", "-b", "feedfacefeedface"}, emu_env(dir));
  CHECK(unknown.exit_code == 4);
}

TEST_CASE("kiln board upload: unplugged mid-upload fails clearly, the re-run resumes, reset boots it, power cycle reverts it") {
  test::TempDir dir;
  auto image = write_image(dir, "fw.bin", 2, 600000);
  {
    test::EmulatorProcess emu(dir.file("emu"), 1, {"--drop-after-bytes", "250000"});
    auto cut = test::kiln({"board", "upload", image}, emu_env(dir));
    CHECK(cut.exit_code == 4);
    CHECK(cut.err.find("disconnected") != std::string::npos);
    CHECK(cut.err.find(emu.sockets()[0]) != std::string::npos);
    auto again = test::kiln({"-o", "json", "board", "upload", image, "--reset"}, emu_env(dir));
    REQUIRE(again.exit_code == 0);
    auto result = json::parse(again.out);
    CHECK(result["resumed_from"].get<std::uint64_t>() > 0);
    CHECK(result["resumed_from"].get<std::uint64_t>() < 600032);
    CHECK(result["reset"] == true);
    CHECK(active_version(dir) == "2.0.0");
  }
  // Restarting the emulator is a power cycle: the test image was never confirmed, so MCUboot reverts.
  test::EmulatorProcess emu(dir.file("emu"), 1);
  CHECK(active_version(dir) == "1.0.0");
}

TEST_CASE("kiln board: a hung board times out naming it; corrupted answers are reported") {
  test::TempDir dir;
  {
    test::EmulatorProcess emu(dir.file("emu"), 1, {"--latency-us", "3000000"});
    auto hung = test::kiln({"board", "info", "--timeout", "300"}, emu_env(dir));
    CHECK(hung.exit_code == 4);
    CHECK(hung.err.find("did not answer") != std::string::npos);
    CHECK(hung.err.find(emu.sockets()[0]) != std::string::npos);
  }
  test::EmulatorProcess emu(dir.file("emu"), 1, {"--corrupt-every", "1"});
  auto damaged = test::kiln({"board", "info"}, emu_env(dir));
  CHECK(damaged.exit_code == 4);
  CHECK(damaged.err.find("damaged packet") != std::string::npos);
}

TEST_CASE("kiln board state: irreversible changes need --yes; a failed precondition changes nothing") {
  test::TempDir dir;
  test::EmulatorProcess emu(dir.file("emu"), 1);
  auto refused = test::kiln({"board", "state", "--set", "module-complete"}, emu_env(dir));
  CHECK(refused.exit_code == 7);
  CHECK(refused.err.find("--yes") != std::string::npos);
  auto dry = test::kiln({"board", "state", "--set", "module-complete", "--dry-run"}, emu_env(dir));
  CHECK(dry.exit_code == 7);  // a blank board has no device key or certificate yet
  CHECK(dry.err.find("not installed") != std::string::npos);
  auto shown = test::kiln({"-o", "json", "board", "state"}, emu_env(dir));
  REQUIRE(shown.exit_code == 0);
  CHECK(json::parse(shown.out)["state"] == "blank");
}

TEST_CASE("kiln board: power loss during the swap leaves the old image booting") {
  test::TempDir dir;
  auto image = write_image(dir, "fw.bin", 7, 300000);
  {
    // The upload writes 300032 flash bytes; the swap then copies the new image into the primary
    // slot: power goes at 150000 bytes into that copy.
    test::EmulatorProcess emu(dir.file("emu"), 1, {"--power-loss-at", "450032"});
    auto r = test::kiln({"board", "upload", image, "--confirm", "--reset"}, emu_env(dir));
    CHECK(r.exit_code == 0);
    CHECK(emu.wait_exit(10) == 75);
  }
  test::EmulatorProcess emu(dir.file("emu"), 1);
  CHECK(active_version(dir) == "1.0.0");
  auto images = json::parse(test::kiln({"-o", "json", "board", "images"}, emu_env(dir)).out);
  REQUIRE(images.size() == 2);
  CHECK(images[1]["version"] == "7.0.0");
  CHECK(images[1]["pending"] == false);
}

TEST_CASE("kiln-board-emu --print-vendor-root prints the root the boards' attestation chains end in") {
  test::TempDir dir;
  test::EmulatorProcess emu(dir.file("emu"), 1);
  auto printed = test::run_process(test::bin_path("kiln-board-emu"), {"--dir", dir.file("emu"), "--print-vendor-root"});
  REQUIRE(printed.exit_code == 0);
  REQUIRE(printed.out.rfind("-----BEGIN CERTIFICATE-----", 0) == 0);
  BIO* bio = BIO_new_mem_buf(printed.out.data(), static_cast<int>(printed.out.size()));
  X509* root = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  REQUIRE(root);
  Bytes der(static_cast<std::size_t>(i2d_X509(root, nullptr)));
  unsigned char* p = der.data();
  i2d_X509(root, &p);
  X509_free(root);
  auto info = test::kiln({"-o", "json", "board", "info"}, emu_env(dir));
  REQUIRE(info.exit_code == 0);
  auto attestation = json::parse(info.out)["attestation"];
  REQUIRE(attestation.size() == 2);
  CHECK(attestation[1] == "sha256:" + to_hex(digest(HashAlg::sha256, der)));
}

TEST_CASE("kiln board state: --dry-run checks, --yes advances, and there is no way back") {
  test::TempDir dir;
  test::EmulatorProcess emu(dir.file("emu"), 1);
  {
    // Give the board a device key and a certificate for it, as factory provisioning will.
    SmpClient client(open_socket_link(emu.sockets()[0]));
    Bytes csr = generate_device_key(client);
    const unsigned char* p = csr.data();
    ossl::Ptr<X509_REQ> req(d2i_X509_REQ(nullptr, &p, static_cast<long>(csr.size())));
    REQUIRE(req);
    ossl::Ptr<X509> cert(X509_new());
    X509_set_version(cert.get(), 2);
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
    X509_set_pubkey(cert.get(), X509_REQ_get0_pubkey(req.get()));
    X509_set_subject_name(cert.get(), X509_REQ_get_subject_name(req.get()));
    X509_set_issuer_name(cert.get(), X509_REQ_get_subject_name(req.get()));
    ossl::Ptr<EVP_PKEY> ca(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    REQUIRE(X509_sign(cert.get(), ca.get(), EVP_sha256()) > 0);
    Bytes der(static_cast<std::size_t>(i2d_X509(cert.get(), nullptr)));
    unsigned char* q = der.data();
    i2d_X509(cert.get(), &q);
    install_certificate_chain(client, {der});
  }
  auto dry = test::kiln({"-o", "json", "board", "state", "--set", "module-complete", "--dry-run"}, emu_env(dir));
  REQUIRE_MESSAGE(dry.exit_code == 0, dry.err);
  CHECK(json::parse(dry.out)["would_become"] == "module-complete");
  CHECK(json::parse(test::kiln({"-o", "json", "board", "state"}, emu_env(dir)).out)["state"] == "blank");

  auto done = test::kiln({"-o", "json", "board", "state", "--set", "module-complete", "--yes"}, emu_env(dir));
  REQUIRE_MESSAGE(done.exit_code == 0, done.err);
  CHECK(json::parse(done.out)["state"] == "module-complete");
  auto again = test::kiln({"board", "state", "--set", "module-complete", "--yes"}, emu_env(dir));
  CHECK(again.exit_code == 7);
  CHECK(again.err.find("only move forward") != std::string::npos);
}

TEST_CASE("kiln board over serial: kiln-board-emu --serial boards are listed and take uploads") {
  test::TempDir dir;
  test::EmulatorProcess emu(dir.file("emu"), 1, {"--serial"});
  auto list = test::kiln({"-o", "json", "board", "list"}, emu_env(dir));
  REQUIRE_MESSAGE(list.exit_code == 0, list.err);
  auto boards = json::parse(list.out);
  REQUIRE(boards.size() == 1);
  CHECK(boards[0]["address"] == "serial:" + emu.sockets()[0]);
  CHECK(boards[0]["uid"] == emu.uids()[0]);
  auto image = write_image(dir, "fw.bin", 4, 50000);
  auto upload = test::kiln({"-o", "json", "board", "upload", image, "--reset", "-b", emu.uids()[0]}, emu_env(dir));
  REQUIRE_MESSAGE(upload.exit_code == 0, upload.err);
  CHECK(active_version(dir) == "4.0.0");
}

TEST_CASE("kiln board list: serial ports named by KILN_SERIAL_PORTS are probed and listed with their UID") {
  test::TempDir dir;
  test::EmulatorProcess emu(dir.file("emu"), 1, {"--serial"});
  // A "real" serial port outside the emulator directory: the board's pty under another name.
  std::filesystem::create_directories(dir.path() / "dev");
  auto port = dir.path() / "dev" / "ttyACM0";
  std::filesystem::create_symlink(emu.sockets()[0], port);
  test::ProcessOptions opts;
  opts.env["KILN_SERIAL_PORTS"] = (dir.path() / "dev" / "ttyACM*").string() + "," + dir.file("none*");
  auto list = test::kiln({"-o", "json", "board", "list"}, opts);
  REQUIRE_MESSAGE(list.exit_code == 0, list.err);
  auto boards = json::parse(list.out);
  REQUIRE(boards.size() == 1);
  CHECK(boards[0]["address"] == "serial:" + port.string());
  CHECK(boards[0]["uid"] == emu.uids()[0]);
  CHECK(boards[0]["status"] == "ok");
  // The only attached board is picked without --board.
  auto info = test::kiln({"-o", "json", "board", "info"}, opts);
  REQUIRE_MESSAGE(info.exit_code == 0, info.err);
  CHECK(json::parse(info.out)["uid"] == emu.uids()[0]);
}

namespace {

json board_images(const test::TempDir& dir) {
  auto r = test::kiln({"-o", "json", "board", "images"}, emu_env(dir));
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  return json::parse(r.out);
}

json slot_of(const json& images, int number) {
  for (const auto& s : images)
    if (s["slot"] == number) return s;
  return nullptr;
}

}  // namespace

TEST_CASE("kiln board upload: re-running it during a test boot keeps the fallback in slot 1; the board protects it too") {
  test::TempDir dir;
  auto v2 = write_image(dir, "v2.bin", 2, 50000);
  auto v3 = write_image(dir, "v3.bin", 3, 50000);
  {
    test::EmulatorProcess emu(dir.file("emu"), 1);
    auto first = test::kiln({"board", "upload", v2, "--reset"}, emu_env(dir));
    REQUIRE_MESSAGE(first.exit_code == 0, first.err);
    auto images = board_images(dir);
    REQUIRE(slot_of(images, 0)["version"] == "2.0.0");
    CHECK(slot_of(images, 0)["confirmed"] == false);  // a test boot
    const json fallback = slot_of(images, 1);
    REQUIRE(fallback["version"] == "1.0.0");
    CHECK(fallback["confirmed"] == true);  // what a revert boots, as MCUboot reports it

    // The operator runs the same command again: a no-op, the fallback stays.
    auto again = test::kiln({"-o", "json", "board", "upload", v2}, emu_env(dir));
    REQUIRE_MESSAGE(again.exit_code == 0, again.err);
    CHECK(json::parse(again.out)["already_running"] == true);
    CHECK(slot_of(board_images(dir), 1) == fallback);

    // Another image while the test runs: refused before anything is erased.
    auto other = test::kiln({"board", "upload", v3, "--reset"}, emu_env(dir));
    CHECK(other.exit_code == 7);
    CHECK(other.err.find("test-running 2.0.0") != std::string::npos);
    CHECK(other.err.find("kiln board confirm") != std::string::npos);
    CHECK(slot_of(board_images(dir), 1) == fallback);

    // The board refuses on its own (a host that does not look first): upload and erase.
    {
      SmpClient client(open_socket_link(emu.sockets()[0]));  // the emulator serves one host at a time
      CHECK_THROWS_WITH_AS(upload_image(client, v3, {}), doctest::Contains("bad state"), Error);
      CHECK_THROWS_WITH_AS(erase_slot(client, 1), doctest::Contains("bad state"), Error);
    }
    CHECK(slot_of(board_images(dir), 1) == fallback);
  }
  {
    // Power cycle without confirming: MCUboot reverts to the fallback, which is intact.
    test::EmulatorProcess emu(dir.file("emu"), 1);
    CHECK(active_version(dir) == "1.0.0");
    // A pending image is protected the same way; the same image again only marks it again.
    REQUIRE(test::kiln({"board", "upload", v3}, emu_env(dir)).exit_code == 0);
    auto same = test::kiln({"-o", "json", "board", "upload", v3}, emu_env(dir));
    REQUIRE_MESSAGE(same.exit_code == 0, same.err);
    CHECK(json::parse(same.out)["packets"] == 0);
    auto replace = test::kiln({"board", "upload", v2}, emu_env(dir));
    CHECK(replace.exit_code == 7);
    CHECK(replace.err.find("marked for the next boot") != std::string::npos);
    CHECK(slot_of(board_images(dir), 1)["version"] == "3.0.0");
    // Boot it, confirm it: slot 1 is free again for the next upload.
    REQUIRE(test::kiln({"board", "reset"}, emu_env(dir)).exit_code == 0);
    CHECK(active_version(dir) == "3.0.0");
    CHECK(test::kiln({"board", "upload", v2}, emu_env(dir)).exit_code == 7);
    auto confirmed = test::kiln({"board", "confirm"}, emu_env(dir));
    REQUIRE_MESSAGE(confirmed.exit_code == 0, confirmed.err);
    CHECK(slot_of(board_images(dir), 0)["confirmed"] == true);
    auto next = test::kiln({"board", "upload", v2}, emu_env(dir));
    CHECK_MESSAGE(next.exit_code == 0, next.err);
  }
}

TEST_CASE("kiln board list/info: a board UID carrying ESC[2J is printed escaped, never raw") {
  test::TempDir dir;
  { test::EmulatorProcess emu(dir.file("emu"), 1); }
  // The board's own identity, as its firmware reports it, now carries a clear-screen sequence.
  for (const auto& entry : std::filesystem::directory_iterator(dir.file("emu"))) {
    if (!std::filesystem::exists(entry.path() / "state.json")) continue;
    auto state = json::parse(read_text_file(entry.path() / "state.json"));
    state["uid"] = state["uid"].get<std::string>() + "\x1b[2J\x1b]0;owned\x07";
    write_file_atomic(entry.path() / "state.json", as_bytes(state.dump()));
  }
  test::EmulatorProcess emu(dir.file("emu"), 1);
  for (std::vector<std::string> args : {std::vector<std::string>{"board", "list"}, {"-o", "csv", "board", "list"},
                                        {"-o", "yaml", "board", "list"}, {"board", "info"}, {"board", "state"}}) {
    CAPTURE(args.back());
    auto r = test::kiln(args, emu_env(dir));
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    CHECK(r.out.find('\x1b') == std::string::npos);
    CHECK(r.out.find('\x07') == std::string::npos);
    CHECK(r.out.find("\\x1b[2J") != std::string::npos);
  }
  auto j = test::kiln({"-o", "json", "board", "list"}, emu_env(dir));
  REQUIRE(j.exit_code == 0);
  CHECK(json::parse(j.out)[0]["uid"].get<std::string>().find("\x1b[2J") != std::string::npos);  // data kept
}
