// Tests for transport/provisioning_group: state and error names, the attestation statement layout, and the client
// calls over a scripted board (what each group error becomes). The key wrap is in tests/signing/key_wrap_test.cpp.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "core/error.hpp"
#include "tests/support/scripted_link.hpp"
#include "transport/provisioning_group.hpp"

using namespace kiln;
using test::answer;
using test::quick;
using test::ScriptedLink;

namespace {

// A board answering every request with `body`; the last request it got is kept.
struct OneAnswerBoard {
  smp::Body body;
  smp::Frame last;
  SmpClient client() {
    return SmpClient(std::make_unique<ScriptedLink>([this](const smp::Frame& f) {
                       last = f;
                       return std::vector{answer(f, body)};
                     }),
                     quick());
  }
};

smp::Body group_error(int rc) { return {{"err", {{"group", smp::group::kiln_provisioning}, {"rc", rc}}}}; }

}  // namespace

TEST_CASE("provisioning group: manufacturing states and group errors have one name each") {
  for (auto state : {ManufacturingState::blank, ManufacturingState::module_complete, ManufacturingState::device_complete})
    CHECK(parse_manufacturing_state(manufacturing_state_name(state)) == state);
  CHECK(manufacturing_state_name(ManufacturingState::module_complete) == "module-complete");
  try {
    parse_manufacturing_state("module_complete");
    FAIL("an unknown state name must be a usage error");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::usage);
    CHECK(std::string(e.what()) == "unknown manufacturing state 'module_complete'");
    CHECK(e.hint().find("blank, module-complete or device-complete") != std::string::npos);
  }
  CHECK(provisioning_rc_name(provisioning_rc::locked) == "locked by the manufacturing state");
  CHECK(provisioning_rc_name(provisioning_rc::no_manifest_key) == "no manifest key installed");
  CHECK(provisioning_rc_name(99) == "unknown error");
}

TEST_CASE("provisioning group: the attestation statement is label, sized nonce, sized UID, key") {
  Bytes nonce{0xaa, 0xbb};
  Bytes key{0x30, 0x01};
  auto statement = attestation_statement(key_statement_label, nonce, "U1", key);
  Bytes expected(key_statement_label.begin(), key_statement_label.end());
  for (int b : {0x00, 0x02, 0xaa, 0xbb, 0x00, 0x02, int{'U'}, int{'1'}, 0x30, 0x01}) expected.push_back(static_cast<std::uint8_t>(b));
  CHECK(statement == expected);
  CHECK(attestation_statement(identity_statement_label, {}, "", {}).size() == identity_statement_label.size() + 4);
  Bytes huge(0x10000, 0);
  CHECK_THROWS_AS(attestation_statement(key_statement_label, huge, "U1", key), Error);
}

TEST_CASE("provisioning group: each group error becomes its exit code, naming the board, command and reason") {
  struct Case {
    int rc;
    ExitCode code;
  };
  for (auto c : {Case{provisioning_rc::locked, ExitCode::conflict}, Case{provisioning_rc::invalid_transition, ExitCode::conflict},
                 Case{provisioning_rc::precondition, ExitCode::conflict}, Case{provisioning_rc::no_device_key, ExitCode::conflict},
                 Case{provisioning_rc::no_manifest_key, ExitCode::conflict},
                 Case{provisioning_rc::unwrap_failed, ExitCode::verification_failed},
                 Case{provisioning_rc::chain_mismatch, ExitCode::verification_failed},
                 Case{provisioning_rc::manifest_refused, ExitCode::verification_failed},
                 Case{provisioning_rc::invalid_argument, ExitCode::board}}) {
    OneAnswerBoard board;
    board.body = group_error(c.rc);
    board.body["reason"] = "because";
    auto client = board.client();
    try {
      set_manufacturing_state(client, ManufacturingState::device_complete, false);
      FAIL("a group error must throw");
    } catch (const Error& e) {
      CAPTURE(c.rc);
      CHECK(e.code() == c.code);
      CHECK(std::string(e.what()) == "board emu:/scripted.sock refused provisioning command 6: " +
                                         std::string(provisioning_rc_name(c.rc)) + ": because");
    }
  }
}

TEST_CASE("provisioning group: the identity a board reports, old and new manifest trust, and what is refused") {
  Bytes key{1, 2, 3}, hash(32, 7);
  smp::Body identity = {{"uid", "AB12"},
                        {"state", "module-complete"},
                        {"attestation", smp::Body::array({smp::binary(Bytes{9})})},
                        {"transport_key", smp::binary(key)},
                        {"transport_key_sig", smp::binary(Bytes{4})},
                        {"firmware", smp::Body::array({{{"slot", 0u}, {"version", "1.2.3"}, {"hash", smp::binary(hash)}}})},
                        {"manifest_key", smp::binary(key)},
                        {"sequence", 5u}};
  auto id = parse_identity(identity);
  CHECK(id.uid == "AB12");
  CHECK(id.state == ManufacturingState::module_complete);
  CHECK(id.attestation_chain == std::vector<Bytes>{Bytes{9}});
  REQUIRE(id.firmware.size() == 1);
  CHECK(id.firmware[0].version == "1.2.3");
  CHECK(id.manifest_keys == std::vector<Bytes>{key});
  CHECK(id.manifest_threshold == 1);  // a board from before M of N: its one key, 1 of 1
  CHECK(id.sequence == 5);
  CHECK(id.attestation_signature.empty());
  identity["manifest_keys"] = smp::Body::array({smp::binary(key), smp::binary(hash)});
  identity["manifest_threshold"] = 2u;
  id = parse_identity(identity);
  CHECK(id.manifest_keys.size() == 2);
  CHECK(id.manifest_threshold == 2);
  CHECK_FALSE(id.trust_version);  // a board that knows no trust updates
  CHECK(id.boot_key_hashes.empty());
  identity["trust_version"] = 2u;
  identity["trust_product"] = "Thermo";
  identity["boot_key_hashes"] = smp::Body::array({smp::binary(hash)});
  id = parse_identity(identity);
  CHECK(id.trust_version == std::optional<std::uint64_t>(2));
  CHECK(id.trust_product == "Thermo");
  CHECK(id.boot_key_hashes == std::vector<Bytes>{hash});

  auto bad_slot = identity;
  bad_slot["firmware"] = smp::Body::array({{{"slot", 0u}, {"version", 3u}, {"hash", smp::binary(hash)}}});
  CHECK_THROWS_WITH_AS(parse_identity(bad_slot), doctest::Contains("not {slot, version, hash}"), Error);

  // A state kiln does not know is the board's fault (exit 4), shown escaped.
  OneAnswerBoard board;
  board.body = {{"uid", "AB"}, {"state", "\x1b[2Jbricked"}};
  auto client = board.client();
  try {
    read_identity(client);
    FAIL("an unknown state must not pass");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::board);
    CHECK(std::string(e.what()).find("manufacturing state kiln does not know") != std::string::npos);
    CHECK(std::string(e.what()).find('\x1b') == std::string::npos);
  }
  // The nonce is sent only when there is one.
  board.body = identity;
  auto asking = board.client();
  read_identity(asking);
  CHECK_FALSE(board.last.body.contains("nonce"));
  Bytes nonce(16, 1);
  read_identity(asking, nonce);
  CHECK(smp::get_bytes(board.last.body, "nonce") == nonce);
}

TEST_CASE("provisioning group: the service config carries only what is set") {
  OneAnswerBoard board;
  board.body = smp::Body::object();
  auto client = board.client();
  ServiceConfig config;
  config.service_url = "https://kiln.example";
  install_service_config(client, config);
  CHECK(board.last.header.group == smp::group::kiln_provisioning);
  CHECK(board.last.header.command == provisioning_command::install_config);
  CHECK(board.last.body == smp::Body{{"service_url", "https://kiln.example"}});
  config.manifest_keys = {Bytes{1}, Bytes{2}};
  config.manifest_threshold = 2;
  config.boot_key_hash = Bytes(32, 0);
  install_service_config(client, config);
  CHECK(board.last.body["manifest_threshold"] == 2);
  CHECK(board.last.body["manifest_keys"].size() == 2);
  CHECK(smp::get_bytes(board.last.body, "boot_key_hash").size() == 32);
  CHECK_FALSE(board.last.body.contains("trust_anchor"));
}
