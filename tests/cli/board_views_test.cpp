// Tests for cli/board_views: the exact JSON `kiln board` prints for a slot, a board's identity and an upload, from
// hand-made values (fingerprints are SHA-256 test vectors, so they are known independently).
#include <doctest/doctest.h>

#include "cli/board_views.hpp"
#include "core/error.hpp"
#include "tests/support/captured_output.hpp"

using namespace kiln;
using namespace kiln::cli;

namespace {

// SHA-256("abc") and SHA-256("") from FIPS 180-2, as `fingerprint` must show them.
constexpr const char* abc_fingerprint = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
constexpr const char* empty_fingerprint = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

Bytes abc() { return Bytes{'a', 'b', 'c'}; }

ImageSlot slot(std::uint32_t number, const std::string& version, std::uint8_t hash_byte) {
  ImageSlot s;
  s.slot = number;
  s.version = version;
  s.hash = Bytes(4, hash_byte);
  s.bootable = true;
  s.active = number == 0;
  s.confirmed = number == 0;
  s.pending = number == 1;
  return s;
}

}  // namespace

TEST_CASE("board_views: a fingerprint is sha256: and the hex SHA-256 of the DER") {
  CHECK(fingerprint(as_bytes("abc")) == abc_fingerprint);
  CHECK(fingerprint(Bytes{}) == empty_fingerprint);
}

TEST_CASE("board_views: a slot renders every flag, and encrypted/compressed only when the board says") {
  CHECK(slot_json(slot(0, "1.2.3", 0xab)).dump() ==
        R"({"image":0,"slot":0,"version":"1.2.3","hash":"abababab","bootable":true,"pending":false,)"
        R"("confirmed":true,"active":true,"permanent":false})");
  auto pending = slot(1, "1.3.0", 0x01);
  pending.permanent = true;
  pending.encrypted = true;
  pending.compressed = false;
  CHECK(slot_json(pending).dump() ==
        R"({"image":0,"slot":1,"version":"1.3.0","hash":"01010101","bootable":true,"pending":true,)"
        R"("confirmed":false,"active":false,"permanent":true,"encrypted":true,"compressed":false})");
}

TEST_CASE("board_views: a blank board's identity has nulls where nothing is installed") {
  BoardIdentity id;
  id.uid = "0a1b2c";
  id.transport_key = abc();
  CHECK(identity_json("emu:/tmp/b/0a1b2c.sock", id).dump() ==
        std::string(R"({"address":"emu:/tmp/b/0a1b2c.sock","uid":"0a1b2c","state":"blank","firmware":[],)") +
            R"("attestation":[],"transport_key":")" + abc_fingerprint +
            R"(","sequence":0,"manifest_keys":[],"manifest_threshold":null,"manifest_digest":null,)"
            R"("trust_version":null,"trust_product":null,"boot_key_hashes":[]})");
}

TEST_CASE("board_views: a provisioned board's identity shows firmware, chain and key fingerprints, trust and manifest") {
  BoardIdentity id;
  id.uid = "0a1b2c";
  id.state = ManufacturingState::device_complete;
  id.attestation_chain = {abc(), Bytes{}};
  id.transport_key = Bytes{};
  id.firmware = {{0, "1.0.0", Bytes{0xde, 0xad}}, {1, "1.1.0", Bytes{0xbe, 0xef}}};
  id.manifest_keys = {abc()};
  id.manifest_threshold = 1;
  id.sequence = 7;
  id.manifest_digest = Bytes{0x01, 0x02};
  id.trust_version = 3;
  id.trust_product = "Thermo";
  id.boot_key_hashes = {Bytes{0xaa}, Bytes{0xbb}};
  auto j = identity_json("serial:/dev/ttyACM0", id);
  CHECK(j["state"] == "device-complete");
  CHECK(j["firmware"].dump() ==
        R"([{"slot":0,"version":"1.0.0","hash":"dead"},{"slot":1,"version":"1.1.0","hash":"beef"}])");
  CHECK(j["attestation"] == Json::array({abc_fingerprint, empty_fingerprint}));
  CHECK(j["transport_key"] == empty_fingerprint);
  CHECK(j["manifest_keys"] == Json::array({abc_fingerprint}));
  CHECK(j["manifest_threshold"] == 1);
  CHECK(j["manifest_digest"] == "0102");
  CHECK(j["sequence"] == 7);
  CHECK(j["trust_version"] == 3);
  CHECK(j["trust_product"] == "Thermo");
  CHECK(j["boot_key_hashes"] == Json::array({"aa", "bb"}));
}

TEST_CASE("board_views: an upload's result: rate over the bytes sent, and the mark each case leaves") {
  InstallResult result;
  result.upload.size = 10000;
  result.upload.resumed_from = 2000;
  result.upload.packets = 20;
  result.upload.sha256 = Bytes{0x12, 0x34};
  result.upload.seconds = 2.0;
  result.slots = {slot(0, "1.0.0", 0xaa), slot(1, "1.1.0", 0xbb)};
  result.reset = true;
  auto j = install_result_json("emu:/b.sock", "fw.bin", result, false);
  CHECK(j.dump() ==
        R"({"address":"emu:/b.sock","file":"fw.bin","size":10000,"sha256":"1234","resumed_from":2000,"packets":20,)"
        R"("seconds":2.0,"bytes_per_second":4000,"already_running":false,"mark":"test","reset":true,"slots":[)" +
            slot_json(result.slots[0]).dump() + "," + slot_json(result.slots[1]).dump() + "]}");
  CHECK(install_result_json("a", "f", result, true)["mark"] == "permanent");
  result.already_running = true;
  CHECK(install_result_json("a", "f", result, false)["mark"] == "none");
  CHECK(install_result_json("a", "f", result, true)["mark"] == "confirmed");
  result.upload.seconds = 0;  // nothing sent: no division by zero
  CHECK(install_result_json("a", "f", result, false)["bytes_per_second"] == 0);
}

TEST_CASE("board_views: one record per board, a silent board's error as its status") {
  std::vector<BoardSummary> boards = {
      {BoardAddress{BoardAddress::Kind::emulator, "/run/a.sock", "A1"}, "A1", "blank", "1.2.3", ""},
      {BoardAddress{BoardAddress::Kind::emulator, "/run/b.sock", "B2"}, "B2", "", "", "timed out"}};
  auto rows = Json::parse(test::capture_output("json", [&](const Context& ctx) { render_boards(ctx, boards); }).out);
  REQUIRE(rows.size() == 2);
  CHECK(rows[0] == Json{{"address", boards[0].address.text()}, {"uid", "A1"}, {"state", "blank"},
                        {"firmware", "1.2.3"}, {"status", "ok"}});
  CHECK(rows[1]["status"] == "timed out");
  CHECK(rows[1]["state"] == "");
}

TEST_CASE("board_views: a record per slot; an image already running is said on stderr") {
  ImageSlot slot;
  slot.slot = 1;
  slot.version = "2.0.0";
  slot.hash = {0xab, 0xcd};
  slot.pending = true;
  auto slots = test::capture_output("jsonl", [&](const Context& ctx) { render_slots(ctx, {slot, slot}); }).out;
  CHECK(slots == json_text(slot_json(slot)) + "\n" + json_text(slot_json(slot)) + "\n");

  InstallResult result;
  result.already_running = true;
  auto said = test::capture_output("json", [&](const Context& ctx) { render_install(ctx, "emu:a", "app.bin", result, true); });
  CHECK(said.err == "board emu:a already runs app.bin: nothing uploaded; it is confirmed\n");
  CHECK(Json::parse(said.out)["mark"] == "confirmed");
  result.already_running = false;
  said = test::capture_output("json", [&](const Context& ctx) { render_install(ctx, "emu:a", "app.bin", result, false); });
  CHECK(said.err.empty());
  CHECK(Json::parse(said.out)["mark"] == "test");
}

TEST_CASE("board_views: the state read, reached, or what a dry run would reach") {
  BoardIdentity id;
  id.uid = "A1";
  id.state = ManufacturingState::module_complete;
  CHECK(board_state_json("emu:a", id) == Json{{"address", "emu:a"}, {"uid", "A1"}, {"state", "module-complete"}});
  CHECK(state_change_json("emu:a", ManufacturingState::device_complete, false) ==
        Json{{"address", "emu:a"}, {"state", "device-complete"}, {"dry_run", false}});
  CHECK(state_change_json("emu:a", ManufacturingState::device_complete, true) ==
        Json{{"address", "emu:a"}, {"would_become", "device-complete"}, {"dry_run", true}});
}

TEST_CASE("board_views: advancing the state without --yes is refused when stdin is not a terminal (exit 7)") {
  ExitCode code = ExitCode::ok;
  std::string message;
  test::capture_output("json", [&](const Context& ctx) {
    try {
      confirm_state_change(ctx, "emu:a", "device-complete");
    } catch (const Error& e) {
      code = e.code();
      message = e.what();
    }
  });
  CHECK(code == ExitCode::conflict);
  CHECK(message == "refusing to advance board emu:a to device-complete without --yes");
}
