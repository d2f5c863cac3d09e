// Tests for the board-side update checks (emulator/update_check) and the board protocol additions
// of contract C1: 64:3 manifest_key, 64:8 install manifest, the firmware record in 64:0 and 64:7.
#include <doctest/doctest.h>

#include "core/files.hpp"
#include "emulator/board.hpp"
#include "emulator/update_check.hpp"
#include "manifests/suit_create.hpp"
#include "signing/file_key.hpp"
#include "signing/key_info.hpp"
#include "signing/mcuboot_sign.hpp"
#include "tests/support/temp_dir.hpp"
#include "transport/smp.hpp"

using namespace kiln;
namespace fs = std::filesystem;

namespace {

std::unique_ptr<Signer> new_signer(const test::TempDir& dir, KeyType type, const std::string& name) {
  write_file_atomic(dir.file(name), as_bytes(generate_private_key_pem(type, std::nullopt)), 0600);
  return load_file_signer(dir.file(name), std::nullopt);
}

// A signed MCUboot image of `payload` bytes at `version`.
fs::path signed_image(const test::TempDir& dir, const std::string& name, const Signer* signer, const std::string& version,
                      std::size_t payload = 3000, bool full_key = false) {
  Bytes app(payload);
  for (std::size_t i = 0; i < app.size(); ++i) app[i] = static_cast<std::uint8_t>(i * 7 + name.size());
  write_file_atomic(dir.file(name + ".bin"), app);
  mcuboot::SignOptions options;
  options.version = mcuboot::parse_version(version);
  options.header_size = 0x200;
  options.pad_header = true;
  options.slot_size = 0x40000;
  options.public_key_full = full_key;
  mcuboot::sign_image(dir.file(name + ".bin"), dir.file(name), options, signer);
  return dir.file(name);
}

Bytes envelope_for(const fs::path& image, std::uint64_t sequence, const Signer* signer) {
  suit::CreateOptions options;
  options.components.push_back({image, ""});
  options.vendor_id = Bytes(16, 0x42);
  options.sequence_number = sequence;
  std::vector<const Signer*> signers;
  if (signer) signers.push_back(signer);
  return suit::encode_envelope(suit::create_envelope(suit::describe(options), {}, signers));
}

Bytes key_hash(const Signer& signer) { return digest(HashAlg::sha256, mcuboot_public_key_bytes(signer.public_key_der())); }

struct Keys {
  test::TempDir dir;
  std::unique_ptr<Signer> release = new_signer(dir, KeyType::ecdsa_p256, "release.pem");
  std::unique_ptr<Signer> other = new_signer(dir, KeyType::ecdsa_p256, "other.pem");
  std::unique_ptr<Signer> boot = new_signer(dir, KeyType::ed25519, "boot.pem");
};

emu::UpdateCheckResult check(const Bytes& envelope, const Keys& k, const fs::path& image, std::uint64_t installed = 0,
                             const Signer* boot = nullptr) {
  emu::UpdateCheckInput input;
  input.envelope = envelope;
  input.manifest_keys = {k.release->public_key_der()};
  input.image = image;
  input.installed_sequence = installed;
  if (boot) input.boot_key_hashes = {key_hash(*boot)};
  return emu::check_update(input);
}

}  // namespace

TEST_CASE("update check: a good envelope and image pass, each bad part fails its own check") {
  Keys k;
  auto image = signed_image(k.dir, "app.signed.bin", k.boot.get(), "1.2.0", 3000, true);
  Bytes good = envelope_for(image, 5, k.release.get());

  auto ok = check(good, k, image, 4, k.boot.get());
  CHECK(ok.ok());
  CHECK(ok.sequence == 5);
  CHECK(ok.envelope_digest == digest(HashAlg::sha256, good));

  // Signed by another key.
  auto wrong_signer = check(envelope_for(image, 5, k.other.get()), k, image);
  CHECK(wrong_signer.failed_check == "signature");
  CHECK(wrong_signer.reason.find("0 valid signatures from the trusted keys, 1 required") != std::string::npos);
  // Unsigned.
  CHECK(check(envelope_for(image, 5, nullptr), k, image).failed_check == "signature");
  // Not an envelope at all.
  CHECK(check(Bytes{0x01, 0x02, 0x03}, k, image).failed_check == "envelope");
  Bytes cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(good.size() / 2));
  CHECK(check(cut, k, image).failed_check == "envelope");
  // No manifest key installed.
  emu::UpdateCheckInput none;
  none.envelope = good;
  none.image = image;
  CHECK(emu::check_update(none).failed_check == "no_manifest_key");

  // Anti-rollback: the agent wants a higher sequence, 64:8 accepts the same one.
  auto same = check(good, k, image, 5);
  CHECK(same.failed_check == "sequence");
  CHECK(same.reason.find("not above the installed 5") != std::string::npos);
  CHECK(check(good, k, image, 9).failed_check == "sequence");
  emu::UpdateCheckInput again;
  again.envelope = good;
  again.manifest_keys = {k.release->public_key_der()};
  again.image = image;
  again.installed_sequence = 5;
  again.allow_same_sequence = true;
  CHECK(emu::check_update(again).ok());
  // A revert may go below, only for the recorded previous envelope.
  again.installed_sequence = 9;
  again.allow_same_sequence = false;
  again.revert_digest = digest(HashAlg::sha256, good);
  CHECK(emu::check_update(again).ok());
  again.revert_digest = Bytes(32, 1);
  CHECK(emu::check_update(again).failed_check == "sequence");

  // Another image than the manifest describes; the same image cut short.
  auto other_image = signed_image(k.dir, "other.signed.bin", k.boot.get(), "1.2.0", 3000, true);
  CHECK(check(good, k, other_image).failed_check == "digest");
  auto image_bytes = read_file(image);
  write_file_atomic(k.dir.file("short.bin"), ByteView(image_bytes).first(image_bytes.size() - 1));
  CHECK(check(good, k, k.dir.file("short.bin")).failed_check == "digest");
}

TEST_CASE("update check: the MCUboot signature must come from the boot key") {
  Keys k;
  // Signed by a key whose hash is not the installed boot-key hash: refused even though the
  // manifest (signed by the release key) describes it exactly.
  auto wrong = signed_image(k.dir, "wrong.signed.bin", k.other.get(), "2.0.0", 2000, true);
  auto r = check(envelope_for(wrong, 2, k.release.get()), k, wrong, 0, k.boot.get());
  CHECK(r.failed_check == "mcuboot");
  CHECK(r.reason.find("boot key hash") != std::string::npos);

  // KEYHASH only: the board can check the signature only when the manifest key is the boot key.
  auto hashed = signed_image(k.dir, "hashed.signed.bin", k.release.get(), "2.0.0", 2000, false);
  CHECK(check(envelope_for(hashed, 2, k.release.get()), k, hashed, 0, k.release.get()).ok());
  auto hashed_boot = signed_image(k.dir, "hashed-boot.signed.bin", k.boot.get(), "2.0.0", 2000, false);
  auto no_key = check(envelope_for(hashed_boot, 2, k.release.get()), k, hashed_boot, 0, k.boot.get());
  CHECK(no_key.failed_check == "mcuboot");
  CHECK(no_key.reason.find("--public-key-format full") != std::string::npos);

  // A flipped payload byte: the manifest digest no longer matches first.
  auto good = signed_image(k.dir, "good.signed.bin", k.boot.get(), "2.0.0", 2000, true);
  Bytes env = envelope_for(good, 2, k.release.get());
  Bytes bytes = read_file(good);
  bytes[0x300] ^= 1;
  write_file_atomic(k.dir.file("flipped.bin"), bytes);
  CHECK(check(env, k, k.dir.file("flipped.bin"), 0, k.boot.get()).failed_check == "digest");
  // A manifest made for the flipped image: MCUboot's own hash catches it.
  CHECK(check(envelope_for(k.dir.file("flipped.bin"), 2, k.release.get()), k, k.dir.file("flipped.bin"), 0, k.boot.get())
            .failed_check == "mcuboot");
}

TEST_CASE("update check: manifest keys are P-256 or Ed25519 SPKIs") {
  Keys k;
  CHECK(emu::acceptable_manifest_key(k.release->public_key_der()));
  CHECK(emu::acceptable_manifest_key(k.boot->public_key_der()));
  auto p384 = new_signer(k.dir, KeyType::ecdsa_p384, "p384.pem");
  CHECK_FALSE(emu::acceptable_manifest_key(p384->public_key_der()));
  CHECK_FALSE(emu::acceptable_manifest_key(Bytes(91, 0x30)));
  CHECK_FALSE(emu::acceptable_manifest_key(Bytes{}));
}

namespace {

smp::Body request(emu::Board& board, std::uint8_t command, smp::Op op, const smp::Body& body) {
  smp::Header header;
  header.op = op;
  header.group = smp::group::kiln_provisioning;
  header.command = command;
  bool reset = false;
  return board.handle(header, body, reset);
}

int group_rc(const smp::Body& body) {
  if (!body.contains("err")) return 0;
  return body["err"].value("rc", 0);
}

}  // namespace

TEST_CASE("board C1: manifest_key in 64:3, 64:8 install manifest, the firmware record in 64:0 and 64:7") {
  Keys k;
  auto root = emu::load_or_create_vendor_root(k.dir.path());
  auto board = emu::Board::create(k.dir.path(), root, {}, 0);
  using smp::Op;

  // Nothing installed yet: sequence 0, no key, 64:8 answers no_manifest_key.
  auto record = request(*board, 7, Op::read, smp::Body::object());
  CHECK(record["sequence"] == 0);
  CHECK_FALSE(record.contains("manifest_key"));
  CHECK_FALSE(record.contains("manifest_digest"));
  auto image = signed_image(k.dir, "app.signed.bin", k.release.get(), "1.3.0");
  Bytes env = envelope_for(image, 3, k.release.get());
  CHECK(group_rc(request(*board, 8, Op::write, {{"envelope", smp::binary(env)}})) == provisioning_rc::no_manifest_key);

  // A bad key is refused; a P-256 SPKI is installed.
  CHECK(group_rc(request(*board, 3, Op::write, {{"manifest_key", smp::binary(Bytes(10, 1))}})) == 7);
  CHECK(group_rc(request(*board, 3, Op::write, {{"manifest_key", smp::binary(k.release->public_key_der())}})) == 0);
  record = request(*board, 7, Op::read, smp::Body::object());
  CHECK(smp::get_bytes(record, "manifest_key") == k.release->public_key_der());

  // The running image is the factory test image: a manifest for another image is refused with the reason.
  auto refused = request(*board, 8, Op::write, {{"envelope", smp::binary(env)}});
  CHECK(group_rc(refused) == provisioning_rc::manifest_refused);
  CHECK(refused.value("reason", "").rfind("digest:", 0) == 0);

  // Upload the image, mark it pending: 64:8 checks the pending image.
  Bytes image_bytes = read_file(image);
  smp::Header up;
  up.op = Op::write;
  up.group = smp::group::image;
  up.command = 1;
  bool reset = false;
  auto uploaded = board->handle(up,
                                {{"image", 0u},
                                 {"off", 0u},
                                 {"len", image_bytes.size()},
                                 {"sha", smp::binary(digest(HashAlg::sha256, image_bytes))},
                                 {"data", smp::binary(image_bytes)}},
                                reset);
  REQUIRE(uploaded.value("match", false));
  smp::Header mark = up;
  mark.command = 0;
  board->handle(mark, {{"hash", smp::binary(digest(HashAlg::sha256, image_bytes))}, {"confirm", true}}, reset);
  auto accepted = request(*board, 8, Op::write, {{"envelope", smp::binary(env)}});
  REQUIRE(group_rc(accepted) == 0);
  CHECK(accepted["sequence"] == 3);
  CHECK(smp::get_bytes(accepted, "digest") == digest(HashAlg::sha256, env));

  // After the swap the same image runs: the same sequence is accepted again, an older one is not.
  board->reset();
  CHECK(board->primary_version() == "1.3.0");
  CHECK(group_rc(request(*board, 8, Op::write, {{"envelope", smp::binary(env)}})) == 0);
  auto older = request(*board, 8, Op::write, {{"envelope", smp::binary(envelope_for(image, 2, k.release.get()))}});
  CHECK(group_rc(older) == provisioning_rc::manifest_refused);
  CHECK(older.value("reason", "").rfind("sequence:", 0) == 0);
  auto other = request(*board, 8, Op::write, {{"envelope", smp::binary(envelope_for(image, 4, k.other.get()))}});
  CHECK(older.value("reason", "") != other.value("reason", ""));
  CHECK(other.value("reason", "").rfind("signature:", 0) == 0);

  for (std::uint8_t command : {std::uint8_t{0}, std::uint8_t{7}}) {
    auto body = request(*board, command, Op::read, smp::Body::object());
    CHECK(body["sequence"] == 3);
    CHECK(smp::get_bytes(body, "manifest_digest") == digest(HashAlg::sha256, env));
    CHECK(smp::get_bytes(body, "manifest_key") == k.release->public_key_der());
  }

  // The record survives a power cycle.
  auto dir = board->dir();
  board.reset();
  board = emu::Board::open(dir, root, {});
  CHECK(request(*board, 7, Op::read, smp::Body::object())["sequence"] == 3);
}

TEST_CASE("update check: M of N counts distinct installed keys, names how many it found") {
  Keys k;
  test::TempDir more;
  auto third = new_signer(more, KeyType::ed25519, "third.pem");
  auto stranger = new_signer(more, KeyType::ecdsa_p256, "stranger.pem");
  auto image = signed_image(k.dir, "app.signed.bin", k.boot.get(), "1.2.0", 3000, true);
  auto envelope = [&](std::vector<const Signer*> signers) {
    suit::CreateOptions options;
    options.components.push_back({image, ""});
    options.vendor_id = Bytes(16, 0x42);
    options.sequence_number = 7;
    return suit::encode_envelope(suit::create_envelope(suit::describe(options), {}, signers));
  };
  emu::UpdateCheckInput input;
  input.manifest_keys = {k.release->public_key_der(), k.other->public_key_der(), third->public_key_der()};
  input.manifest_threshold = 2;
  input.image = image;
  input.boot_key_hashes = {key_hash(*k.boot)};

  Bytes one = envelope({k.release.get()});
  input.envelope = one;
  auto below = emu::check_update(input);
  CHECK(below.failed_check == "signature");
  CHECK(below.reason.find("1 valid signature from the trusted keys, 2 required (threshold 2 of 3)") !=
        std::string::npos);

  // The same key twice plus a stranger: still one.
  Bytes padded = envelope({k.release.get(), k.release.get(), stranger.get()});
  input.envelope = padded;
  auto still = emu::check_update(input);
  CHECK(still.failed_check == "signature");
  CHECK(still.reason.find("1 valid signature from the trusted keys") != std::string::npos);

  Bytes two = envelope({third.get(), k.other.get()});
  input.envelope = two;
  CHECK(emu::check_update(input).ok());
  input.manifest_threshold = 3;
  CHECK(emu::check_update(input).reason.find("2 valid signatures from the trusted keys, 3 required (threshold 3 of 3)") !=
        std::string::npos);
}

TEST_CASE("board: 64:3 manifest_keys + manifest_threshold installs M of N; empty sets and bad thresholds refused") {
  Keys k;
  test::TempDir more;
  auto third = new_signer(more, KeyType::ed25519, "third.pem");
  auto root = emu::load_or_create_vendor_root(k.dir.path());
  auto board = emu::Board::create(k.dir.path(), root, {}, 0);
  using smp::Op;
  auto keys = [](std::vector<const Signer*> signers) {
    smp::Body out = smp::Body::array();
    for (const auto* s : signers) out.push_back(smp::binary(s->public_key_der()));
    return out;
  };
  const int invalid_argument = 7;
  auto install = [&](smp::Body body) { return group_rc(request(*board, 3, Op::write, body)); };
  auto all = keys({k.release.get(), k.other.get(), third.get()});
  CHECK(install({{"manifest_keys", smp::Body::array()}, {"manifest_threshold", 1u}}) == invalid_argument);
  CHECK(install({{"manifest_keys", all}, {"manifest_threshold", 4u}}) == invalid_argument);
  CHECK(install({{"manifest_keys", all}, {"manifest_threshold", 0u}}) == invalid_argument);
  CHECK(install({{"manifest_keys", all}}) == invalid_argument);  // several keys: say the threshold
  CHECK(install({{"manifest_keys", keys({k.release.get(), k.release.get()})}, {"manifest_threshold", 1u}}) ==
        invalid_argument);
  CHECK(install({{"manifest_threshold", 1u}}) == invalid_argument);
  CHECK(install({{"manifest_key", smp::binary(k.release->public_key_der())}, {"manifest_keys", all},
                 {"manifest_threshold", 2u}}) == invalid_argument);
  auto record = request(*board, 7, Op::read, smp::Body::object());
  CHECK_FALSE(record.contains("manifest_keys"));  // nothing was installed by the refused requests

  REQUIRE(install({{"manifest_keys", all}, {"manifest_threshold", 2u}}) == 0);
  record = request(*board, 7, Op::read, smp::Body::object());
  CHECK(record["manifest_keys"].size() == 3);
  CHECK(record["manifest_threshold"] == 2);
  CHECK_FALSE(record.contains("manifest_key"));

  // Persisted across a power cycle; 64:8 counts signatures from the installed set.
  auto dir = board->dir();
  board.reset();
  board = emu::Board::open(dir, root, {});
  record = request(*board, 0, Op::read, smp::Body::object());
  CHECK(record["manifest_threshold"] == 2);
  CHECK(record["manifest_keys"].size() == 3);
  auto image = signed_image(k.dir, "app.signed.bin", k.release.get(), "1.3.0");
  auto refused = request(*board, 8, Op::write, {{"envelope", smp::binary(envelope_for(image, 3, k.release.get()))}});
  CHECK(group_rc(refused) == provisioning_rc::manifest_refused);
  CHECK(refused.value("reason", "").find("signature: 1 valid signature from the trusted keys, 2 required") !=
        std::string::npos);
}
