// The board's trust update rule (docs/key-rotation.md): applied only when trust::check accepts it against the trust
// in force, persisted across power cycles, nothing changed on refusal; state files from before trust updates load.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "core/files.hpp"
#include "emulator/board.hpp"
#include "emulator/server.hpp"
#include "manifests/trust_update.hpp"
#include "signing/file_key.hpp"
#include "tests/support/temp_dir.hpp"
#include "transport/provisioning_group.hpp"

using namespace kiln;
namespace fs = std::filesystem;

namespace {

std::unique_ptr<Signer> make_key(const test::TempDir& dir, const std::string& name) {
  write_file_atomic(dir.file(name), as_bytes(generate_private_key_pem(KeyType::ecdsa_p256, std::nullopt)), 0600);
  return load_file_signer(dir.file(name), std::nullopt);
}

Bytes signed_update(const trust::TrustUpdate& update, std::initializer_list<const Signer*> signers) {
  suit::Envelope envelope = trust::create(update);
  for (const Signer* s : signers) suit::add_signature(envelope, *s);
  return suit::encode_envelope(envelope);
}

}  // namespace

TEST_CASE("emulator: trust updates replace the board's keys in order; refused ones change nothing") {
  test::TempDir dir;
  emu::VendorRoot root = emu::load_or_create_vendor_root(dir.path());
  auto board = emu::Board::create(dir.path(), root, {}, 0);
  auto a = make_key(dir, "a.pem"), b = make_key(dir, "b.pem"), c = make_key(dir, "c.pem");
  const Bytes boot1(32, 0x01), boot2(32, 0x02);
  {
    fs::path socket = dir.path() / "b.sock";
    emu::BoardServer server(*board, socket, {}, {});
    server.start();
    SmpClient client(open_socket_link(socket.string()));
    ServiceConfig config;
    config.boot_key_hash = boot1;
    config.manifest_keys = {a->public_key_der()};
    config.manifest_threshold = 1;
    install_service_config(client, config);
  }
  trust::TrustState factory = board->trust_state();
  CHECK(factory.version == 0);
  CHECK(factory.boot_key_hashes == std::vector<Bytes>{boot1});

  trust::TrustUpdate v1{"Thermo", 1, {a->public_key_der(), b->public_key_der(), c->public_key_der()}, 2, {boot1, boot2}, {}};
  trust::TrustUpdate v2{"Thermo", 2, {b->public_key_der(), c->public_key_der()}, 2, {boot2}, {}};
  Bytes v2_bytes = signed_update(v2, {b.get(), c.get()});

  // Out of order: update 2 is signed by keys the board does not trust yet.
  CHECK(board->apply_trust_update(v2_bytes).failed_check == "signature");
  // Not signed by a trusted key; truncated: refused.
  CHECK(board->apply_trust_update(signed_update(v1, {b.get()})).failed_check == "signature");
  Bytes v1_bytes = signed_update(v1, {a.get()});
  CHECK(board->apply_trust_update(ByteView(v1_bytes.data(), v1_bytes.size() - 1)).failed_check == "malformed");
  CHECK(board->trust_state().manifest_keys == factory.manifest_keys);
  CHECK(board->trust_state().version == 0);

  auto accepted = board->apply_trust_update(v1_bytes);
  REQUIRE_MESSAGE(accepted.ok(), accepted.reason);
  CHECK(board->apply_trust_update(v1_bytes).failed_check == "version");  // replayed
  trust::TrustUpdate other = v2;
  other.product = "Oven";
  CHECK(board->apply_trust_update(signed_update(other, {b.get(), c.get()})).failed_check == "product");
  REQUIRE(board->apply_trust_update(v2_bytes).ok());
  CHECK(board->apply_trust_update(v1_bytes).failed_check == "version");  // older

  // Persisted; the agent sees the boot-key set and the trust version.
  auto board_dir = dir.path() / board->uid();
  board.reset();
  board = emu::Board::open(board_dir, root, {});
  trust::TrustState after = board->trust_state();
  CHECK(after.version == 2);
  CHECK(after.product == "Thermo");
  CHECK(after.manifest_keys == v2.manifest_keys);
  CHECK(after.manifest_threshold == 2);
  CHECK(after.boot_key_hashes == std::vector<Bytes>{boot2});
  CHECK(board->agent_view().boot_key_hashes == std::vector<Bytes>{boot2});
  CHECK(board->agent_view().trust_version == 2);

  // A state file from before trust updates: its one boot-key hash is the set.
  auto state = nlohmann::json::parse(read_text_file(board_dir / "state.json"));
  state.erase("boot_key_hashes");
  state.erase("trust_version");
  state.erase("trust_product");
  state["boot_key_hash"] = to_hex(boot1);
  board.reset();
  write_file_atomic(board_dir / "state.json", as_bytes(state.dump()));
  board = emu::Board::open(board_dir, root, {});
  CHECK(board->trust_state().boot_key_hashes == std::vector<Bytes>{boot1});
  CHECK(board->trust_state().version == 0);
}
