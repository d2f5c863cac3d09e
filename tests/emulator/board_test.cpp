// Tests for the emulated board through the real SMP client: identity, slots, upload, provisioning, faults.
#include <doctest/doctest.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/files.hpp"
#include "emulator/board.hpp"
#include "emulator/server.hpp"
#include "signing/file_key.hpp"
#include "signing/key_export.hpp"
#include "signing/openssl_ptr.hpp"
#include "signing/signer.hpp"
#include "tests/emulator/served_board.hpp"
#include "tests/support/temp_dir.hpp"
#include "transport/board_api.hpp"
#include "transport/provisioning_group.hpp"

using namespace kiln;
namespace fs = std::filesystem;
using test::ServedBoard;

namespace {

fs::path write_image(const test::TempDir& dir, const std::string& name, std::uint8_t major, std::size_t size) {
  auto path = dir.path() / name;
  write_file_atomic(path, emu::make_test_image(major, 0, 0, size));
  return path;
}

ossl::Ptr<X509> parse_der(const Bytes& der) {
  const unsigned char* p = der.data();
  return ossl::Ptr<X509>(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
}

// A station CA stand-in: issues a certificate for the CSR's key, self-signed by `ca_key`.
Bytes issue_from_csr(const Bytes& csr_der, EVP_PKEY* ca_key) {
  const unsigned char* p = csr_der.data();
  ossl::Ptr<X509_REQ> req(d2i_X509_REQ(nullptr, &p, static_cast<long>(csr_der.size())));
  REQUIRE(req);
  REQUIRE(X509_REQ_verify(req.get(), X509_REQ_get0_pubkey(req.get())) == 1);
  ossl::Ptr<X509> cert(X509_new());
  X509_set_version(cert.get(), 2);
  X509_set_subject_name(cert.get(), X509_REQ_get_subject_name(req.get()));
  X509_set_issuer_name(cert.get(), X509_REQ_get_subject_name(req.get()));
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
  X509_set_pubkey(cert.get(), X509_REQ_get0_pubkey(req.get()));
  X509_sign(cert.get(), ca_key, EVP_sha256());
  int len = i2d_X509(cert.get(), nullptr);
  Bytes der(static_cast<std::size_t>(len));
  unsigned char* q = der.data();
  i2d_X509(cert.get(), &q);
  return der;
}

ossl::Ptr<EVP_PKEY> new_p256() { return ossl::Ptr<EVP_PKEY>(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")); }

int active_major(SmpClient& client) {
  for (const auto& slot : read_image_state(client))
    if (slot.active) return std::stoi(slot.version);
  return -1;
}

}  // namespace

TEST_CASE("emulator: identity carries an attestation chain that verifies to the vendor root") {
  ServedBoard b;
  auto client = b.client();
  auto id = read_identity(client);
  CHECK(id.uid == b.board->uid());
  CHECK(id.state == ManufacturingState::blank);
  REQUIRE(id.attestation_chain.size() == 2);
  auto leaf = parse_der(id.attestation_chain[0]);
  auto root = parse_der(id.attestation_chain[1]);
  REQUIRE(leaf);
  REQUIRE(root);
  CHECK(X509_verify(leaf.get(), X509_get0_pubkey(root.get())) == 1);
  CHECK(X509_verify(root.get(), X509_get0_pubkey(root.get())) == 1);
  // The transport key is vouched for by the attestation key.
  Bytes leaf_key = spki_der(X509_get0_pubkey(leaf.get()));
  CHECK(verify_signature(leaf_key, digest(HashAlg::sha256, id.transport_key), HashAlg::sha256,
                         id.transport_key_signature));
  REQUIRE(id.firmware.size() == 1);
  CHECK(id.firmware[0].version == "1.0.0");
  CHECK(echo(client, "hello board") == "hello board");
}

TEST_CASE("emulator: windowed upload, test swap on reset, revert unless confirmed") {
  ServedBoard b;
  auto image = write_image(b.dir, "v2.bin", 2, 100000);
  {
    auto client = b.client();
    auto result = upload_image(client, image, {});
    CHECK(result.size == 100032);
    CHECK(result.resumed_from == 0);
    auto slots = read_image_state(client);
    REQUIRE(slots.size() == 2);
    CHECK(slots[1].version == "2.0.0");
    CHECK(slots[1].hash == result.sha256);
    write_image_state(client, slots[1].hash, false);
    reset_board(client);
  }
  {
    auto client = b.client();
    CHECK(active_major(client) == 2);
    CHECK_FALSE(read_image_state(client)[0].confirmed);
    reset_board(client);  // not confirmed: MCUboot reverts
  }
  {
    auto client = b.client();
    CHECK(active_major(client) == 1);
    auto slots = read_image_state(client);
    write_image_state(client, slots.at(1).hash, true);  // permanent this time
    reset_board(client);
  }
  auto client = b.client();
  CHECK(active_major(client) == 2);
  CHECK(read_image_state(client)[0].confirmed);
}

TEST_CASE("emulator: an unplugged upload fails naming the board and resumes on the next run") {
  emu::FaultInjection faults;
  faults.drop_after_bytes = 60000;
  ServedBoard b({}, {}, faults);
  auto image = write_image(b.dir, "v3.bin", 3, 200000);
  {
    auto client = b.client();
    try {
      upload_image(client, image, {});
      FAIL("upload should have been cut");
    } catch (const Error& e) {
      CHECK(e.code() == ExitCode::board);
      CHECK(std::string(e.what()).find(b.socket.string()) != std::string::npos);
      CHECK(std::string(e.what()).find("disconnected") != std::string::npos);
    }
  }
  auto client = b.client();
  auto result = upload_image(client, image, {});
  CHECK(result.resumed_from > 0);
  CHECK(result.resumed_from < result.size);
  auto slots = read_image_state(client);
  REQUIRE(slots.size() == 2);
  CHECK(slots[1].hash == digest(HashAlg::sha256, read_file(image)));
}

TEST_CASE("emulator: state survives a power cycle, and power loss during a swap boots the old image") {
  ServedBoard b;
  auto image = write_image(b.dir, "v4.bin", 4, 50000);
  {
    auto client = b.client();
    auto result = upload_image(client, image, {});
    write_image_state(client, result.sha256, true);
  }
  b.server.reset();
  auto board_dir = b.dir.path() / b.board->uid();
  b.board.reset();
  emu::BoardOptions lossy;
  lossy.power_loss_at = 20000;  // mid-way through copying the new image into the primary slot
  CHECK_THROWS_AS(emu::Board::open(board_dir, b.root, lossy), emu::PowerLoss);
  b.board = emu::Board::open(board_dir, b.root, {});
  b.serve();
  auto client = b.client();
  CHECK(active_major(client) == 1);
  auto slots = read_image_state(client);
  REQUIRE(slots.size() == 2);
  CHECK_FALSE(slots[1].pending);
}

TEST_CASE("emulator: provisioning with a key generated in the secure element") {
  ServedBoard b;
  auto client = b.client();
  CHECK_THROWS_AS(sign_challenge(client, as_bytes("nonce")), Error);  // no device key yet
  Bytes csr = generate_device_key(client, "unit-1");
  auto ca = new_p256();
  Bytes cert = issue_from_csr(csr, ca.get());
  install_certificate_chain(client, {cert});

  // A chain for a different key is refused.
  auto other = new_p256();
  Bytes other_csr;
  {
    ossl::Ptr<X509_REQ> req(X509_REQ_new());
    X509_REQ_set_pubkey(req.get(), other.get());
    X509_REQ_sign(req.get(), other.get(), EVP_sha256());
    other_csr.resize(static_cast<std::size_t>(i2d_X509_REQ(req.get(), nullptr)));
    unsigned char* p = other_csr.data();
    i2d_X509_REQ(req.get(), &p);
  }
  try {
    install_certificate_chain(client, {issue_from_csr(other_csr, ca.get())});
    FAIL("mismatched chain accepted");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::verification_failed);
  }

  auto record = read_provisioning_record(client);
  CHECK(record.key_origin == "generated");
  REQUIRE(record.certificate_chain.size() == 1);
  Bytes signature = sign_challenge(client, as_bytes("claim-nonce-42"));
  CHECK(verify_signature(record.device_public_key, digest(HashAlg::sha256, as_bytes("claim-nonce-42")),
                         HashAlg::sha256, signature));

  // device-complete needs the service configuration first.
  try {
    set_manufacturing_state(client, ManufacturingState::device_complete, false);
    FAIL("precondition ignored");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::conflict);
  }
  CHECK(set_manufacturing_state(client, ManufacturingState::module_complete, true) ==
        ManufacturingState::module_complete);
  CHECK(read_identity(client).state == ManufacturingState::blank);  // dry run changed nothing
  set_manufacturing_state(client, ManufacturingState::module_complete, false);
  CHECK_THROWS_AS(generate_device_key(client), Error);  // key locked now
  ServiceConfig config;
  config.boot_key_hash = Bytes(32, 0x11);
  config.service_url = "https://kiln.example:8443";
  config.trust_anchor_pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  install_service_config(client, config);
  set_manufacturing_state(client, ManufacturingState::device_complete, false);
  try {
    install_service_config(client, config);
    FAIL("config writable after device-complete");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::conflict);
  }
  CHECK_THROWS_AS(set_manufacturing_state(client, ManufacturingState::module_complete, false), Error);
  b.power_cycle();
  auto again = b.client();
  auto after = read_provisioning_record(again);
  CHECK(after.state == ManufacturingState::device_complete);
  CHECK(after.config.service_url == "https://kiln.example:8443");
}

TEST_CASE("emulator: injected key is unwrapped with the transport key and never for another board") {
  ServedBoard b;
  auto client = b.client();
  auto id = read_identity(client);
  auto device_key = new_p256();
  int len = i2d_PrivateKey(device_key.get(), nullptr);
  Bytes pkcs8(static_cast<std::size_t>(len));
  unsigned char* p = pkcs8.data();
  i2d_PrivateKey(device_key.get(), &p);

  auto wrong_uid = wrap_device_key(id.transport_key, "not-" + id.uid, pkcs8);
  try {
    inject_device_key(client, wrong_uid);
    FAIL("key for another board accepted");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::verification_failed);
  }
  Bytes installed = inject_device_key(client, wrap_device_key(id.transport_key, id.uid, pkcs8));
  CHECK(installed == spki_der(device_key.get()));
  CHECK(read_provisioning_record(client).key_origin == "injected");
}

TEST_CASE("emulator: hostile request packets get rc invalid, not a crash") {
  test::TempDir dir;
  auto root = emu::load_or_create_vendor_root(dir.path());
  auto board = emu::Board::create(dir.path(), root, {}, 0);
  smp::Header h{smp::Op::write, smp::smp_version_2, 0, 0, smp::group::image, 0, image_command::upload};
  Bytes packet = smp::encode_frame(h, {{"off", 5}});  // missing data
  auto reply = board->handle_packet(packet);
  REQUIRE(reply.packet);
  CHECK(smp::response_outcome(smp::decode_frame(*reply.packet).body).rc == smp::rc::invalid);
  Bytes bad_cbor = smp::encode_header(smp::Header{smp::Op::read, 1, 0, 2, 0, 1, 0});
  bad_cbor.insert(bad_cbor.end(), {0xbf, 0x61});
  reply = board->handle_packet(bad_cbor);
  REQUIRE(reply.packet);
  CHECK(smp::response_outcome(smp::decode_frame(*reply.packet).body).rc == smp::rc::invalid);
}

TEST_CASE("emulator: a state file whose slot 1 mark is unknown is refused, not read as another mark") {
  test::TempDir dir;
  auto root = emu::load_or_create_vendor_root(dir.path());
  auto board_dir = emu::Board::create(dir.path(), root, {}, 0)->dir();
  auto state = nlohmann::json::parse(read_text_file(board_dir / "state.json"));
  CHECK(state["pending"] == "none");
  state["pending"] = "test";
  write_file_atomic(board_dir / "state.json", as_bytes(state.dump()));
  CHECK_NOTHROW(emu::Board::open(board_dir, root, {}));
  for (const char* unknown : {"confirmed", "sometimes"}) {
    state["pending"] = unknown;
    write_file_atomic(board_dir / "state.json", as_bytes(state.dump()));
    try {
      emu::Board::open(board_dir, root, {});
      FAIL("opened");
    } catch (const Error& e) {
      CHECK(std::string(e.what()) == fmt::format("board state file: pending '{}' is not none, test or permanent", unknown));
    }
  }
}
