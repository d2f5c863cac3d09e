// Tests for service/delivery on imgtool's ECIES-P256 vector (mcuboot-more/enc-p256-aes128, encrypted for
// enc-p256.pem, the service's delivery key here): the delivery key's file checks, a device with its own
// image-encryption key gets the release with the content key wrapped to that key (its key decrypts it to the
// release's plaintext, the delivery key and another device's key do not), made once and kept; devices without
// a key, releases not encrypted or encrypted for another key, and a service without a delivery key: as uploaded.
// On the run's store (SQLite, or PostgreSQL under the service_postgres entry).
#include <doctest/doctest.h>

#include <filesystem>
#include <memory>
#include <string>

#include "core/error.hpp"
#include "core/files.hpp"
#include "service/api.hpp"
#include "service/handlers.hpp"
#include "service/store.hpp"
#include "signing/file_key.hpp"
#include "signing/image_crypto.hpp"
#include "signing/image_delivery.hpp"
#include "signing/mcuboot_image.hpp"
#include "signing/mcuboot_sign.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/postgres.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/vectors.hpp"

using namespace kiln;
using namespace kiln::service;
namespace fs = std::filesystem;

namespace {

constexpr std::int64_t tenant = 1;

std::string sha256_hex(const fs::path& file) { return to_hex(digest(HashAlg::sha256, read_file(file))); }

// A service's store and configuration with the release uploaded as tenant 1's blob, and calls made as devices.
struct Delivery {
  test::TempDir dir;
  std::unique_ptr<Store> store = open_store(test::test_store(dir.file("kiln.db")));
  ServiceConfig config{"", dir.path() / "images", 60};
  Request request;
  std::string release = test::vector("mcuboot-more/enc-p256-aes128.signed.bin");
  std::string sha = upload(release);

  Delivery() {
    fs::copy_file(test::vector("mcuboot-more/enc-p256.pem"), dir.path() / "delivery.pem");
    fs::permissions(dir.path() / "delivery.pem", fs::perms::owner_read | fs::perms::owner_write);
    config.delivery_key = load_delivery_key(dir.path() / "delivery.pem");
  }
  std::string upload(const fs::path& file) {
    auto sha256 = sha256_hex(file);
    fs::create_directories(blob_path(config, tenant, sha256).parent_path());
    fs::copy_file(file, blob_path(config, tenant, sha256));
    return sha256;
  }
  Call as(const std::string& device, const std::string& image) {
    return Call{*store, config, request, Principal{tenant, Role::reader, device, device}, {image}, {}};
  }
  // A fresh P-256 image-encryption key for `device`, recorded as the ledger import does; its private key file.
  std::string give_key(const std::string& device) {
    auto path = dir.file(device + ".key.pem");
    write_file_atomic(path, as_bytes(generate_private_key_pem(KeyType::ecdsa_p256, std::nullopt)), 0600);
    store->set_device_encryption_key(device, to_hex(load_public_key_file(path, std::nullopt)));
    return path;
  }
  // What GET /v1/agent/images/{sha}/content sends `device` after a check-in offered it the release (the offer makes
  // the device's image), written to a file.
  fs::path download(const std::string& device) {
    auto call = as(device, sha);
    REQUIRE(device_image(call, sha));
    auto response = agent_download_image(call);
    REQUIRE(response.status == 200);
    REQUIRE(response.stream);
    std::string body;
    response.stream->send(0, response.stream->size(), [&](const char* data, std::size_t length) {
      body.append(data, length);
      return true;
    });
    auto path = dir.path() / ("download-" + device + ".bin");
    write_file_atomic(path, as_bytes(body));
    return path;
  }
  // The plaintext body of `image` decrypted with the private key in `key_file`.
  Bytes decrypted_body(const fs::path& image, const std::string& key_file) {
    auto out = dir.path() / (image.filename().string() + ".plain");
    mcuboot::decrypt_image(image, out, *mcuboot::load_content_key_opener_file(key_file, "key"));
    auto bytes = read_file(out);
    auto header = mcuboot::parse_header(bytes);
    return Bytes(bytes.begin() + header.header_size, bytes.begin() + header.header_size + header.image_size);
  }
};

}  // namespace

TEST_CASE("delivery: the delivery key must exist, be the owner's alone and open releases") {
  test::TempDir dir;
  CHECK(test::exit_code_of([&] { load_delivery_key(dir.path() / "absent.pem"); }) == ExitCode::not_found);
  fs::copy_file(test::vector("mcuboot-more/enc-p256.pem"), dir.path() / "shared.pem");
  fs::permissions(dir.path() / "shared.pem", fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
  try {
    load_delivery_key(dir.path() / "shared.pem");
    FAIL("a delivery key others may read was loaded");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::usage);
    CHECK(std::string(e.what()).find("may be read by others (mode 640)") != std::string::npos);
    CHECK(e.hint() == "chmod 600 " + (dir.path() / "shared.pem").string());
  }
  write_file_atomic(dir.path() / "junk.pem", as_bytes("not a key\n"), 0600);
  CHECK(test::exit_code_of([&] { load_delivery_key(dir.path() / "junk.pem"); }) == ExitCode::usage);
  CHECK_THROWS_WITH_AS(load_delivery_key(dir.path() / "junk.pem"),
                       doctest::Contains(("delivery key " + (dir.path() / "junk.pem").string()).c_str()), Error);
}

TEST_CASE("delivery: a device gets the release wrapped to its own key; only its key opens it, to the release's plaintext") {
  Delivery d;
  auto alpha_key = d.give_key("alpha");
  auto beta_key = d.give_key("beta");
  auto alpha = d.as("alpha", d.sha);
  auto made = device_image(alpha, d.sha);
  REQUIRE(made);
  CHECK(made->device_id == "alpha");
  CHECK(made->image == d.sha);

  auto mine = d.download("alpha");
  CHECK(static_cast<std::int64_t>(fs::file_size(mine)) == made->size);
  CHECK(sha256_hex(mine) == made->sha256);  // what the check-in offer announces is what the download sends
  CHECK(made->sha256 != d.sha);
  CHECK(fs::file_size(mine) == fs::file_size(d.release));  // same key type: only the key TLV's bytes differ
  // Header, body and protected TLVs are the release's byte for byte: the area starts where the release's does.
  auto at = mcuboot::locate_key_tlv(d.release);
  auto release_bytes = read_file(d.release), mine_bytes = read_file(mine);
  CHECK(Bytes(mine_bytes.begin(), mine_bytes.begin() + static_cast<std::ptrdiff_t>(at.area_offset)) ==
        Bytes(release_bytes.begin(), release_bytes.begin() + static_cast<std::ptrdiff_t>(at.area_offset)));
  CHECK(to_hex(ByteView(mine_bytes).subspan(at.area_offset, at.area_size)) == made->area);

  auto plain = d.decrypted_body(d.release, d.dir.file("delivery.pem"));
  CHECK(d.decrypted_body(mine, alpha_key) == plain);
  CHECK(test::exit_code_of([&] { d.decrypted_body(mine, beta_key); }) == ExitCode::verification_failed);
  CHECK(test::exit_code_of([&] { d.decrypted_body(mine, d.dir.file("delivery.pem")); }) ==
        ExitCode::verification_failed);
  auto theirs = d.download("beta");
  CHECK(sha256_hex(theirs) != sha256_hex(mine));
  CHECK(d.decrypted_body(theirs, beta_key) == plain);

  // Made once: asked again, the kept wrap comes back unchanged (a fresh wrap would differ: ECIES is randomised).
  auto again = device_image(alpha, d.sha);
  REQUIRE(again);
  CHECK(again->area == made->area);
  CHECK(sha256_hex(d.download("alpha")) == made->sha256);
}

TEST_CASE("delivery: no key, a plain release, a release for another key, or no delivery key: delivered as uploaded") {
  Delivery d;
  auto no_key = d.as("gamma", d.sha);
  CHECK_FALSE(device_image(no_key, d.sha));

  d.give_key("alpha");
  auto plain_sha = d.upload(test::vector("mcuboot/ed25519-basic.signed.bin"));
  auto plain = d.as("alpha", plain_sha);
  CHECK_FALSE(device_image(plain, plain_sha));
  auto other_sha = d.upload(test::vector("mcuboot-more/enc-x25519-aes128.signed.bin"));
  auto other = d.as("alpha", other_sha);
  CHECK_FALSE(device_image(other, other_sha));

  d.config.delivery_key = nullptr;
  auto without = d.as("alpha", d.sha);
  CHECK_FALSE(device_image(without, d.sha));
  // An API token's call (no device) never gets a device's image either.
  d.config.delivery_key = load_delivery_key(d.dir.path() / "delivery.pem");
  auto token = d.as("", d.sha);
  CHECK_FALSE(device_image(token, d.sha));
  CHECK(device_image(without, d.sha));
}

TEST_CASE("delivery: a device's first image in a check-in's telemetry unit is made in the write order, once") {
  // The delivery key, counting the content keys it opens (one per wrap).
  struct CountingOpener : mcuboot::ContentKeyOpener {
    std::shared_ptr<const mcuboot::ContentKeyOpener> real;
    mutable int opened = 0;
    explicit CountingOpener(std::shared_ptr<const mcuboot::ContentKeyOpener> key) : real(std::move(key)) {}
    mcuboot::EncryptionKeyKind kind() const override { return real->kind(); }
    std::string description() const override { return real->description(); }
    Bytes public_key_der() const override { return real->public_key_der(); }
    Bytes open(std::uint16_t type, ByteView value, std::size_t key_size) const override {
      ++opened;
      return real->open(type, value, key_size);
    }
  };
  Delivery d;
  auto counting = std::make_shared<CountingOpener>(d.config.delivery_key);
  d.config.delivery_key = counting;
  d.give_key("alpha");
  auto alpha = d.as("alpha", d.sha);
  // As the service runs a check-in: a telemetry unit first, and the write order when it writes more.
  auto in_unit = [&](Store::Access access) {
    auto unit = d.store->begin(access);
    auto made = device_image(alpha, d.sha);
    unit->commit();
    return made;
  };
  std::optional<DeviceImage> made;
  try {
    made = in_unit(Store::Access::telemetry);
  } catch (const WriteOrderNeeded&) {
    made = in_unit(Store::Access::write);
  }
  REQUIRE(made);
  // Wrapped in the telemetry unit (which then asks for the write order before hashing) and in the write order.
  CHECK(counting->opened == (test::testing_postgresql() ? 2 : 1));
  auto opened = counting->opened;
  // Kept: the next check-in's telemetry unit finds it, and wraps nothing.
  CHECK(in_unit(Store::Access::telemetry)->area == made->area);
  CHECK(counting->opened == opened);
  // A release encrypted for another key is decided inside the telemetry unit: no write order, nothing kept.
  auto other_sha = d.upload(test::vector("mcuboot-more/enc-x25519-aes128.signed.bin"));
  auto other = d.as("alpha", other_sha);
  for (int check_in = 0; check_in < 2; ++check_in) {
    auto unit = d.store->begin(Store::Access::telemetry);
    CHECK_FALSE(device_image(other, other_sha));
    unit->commit();
  }
}
