// docs/offline-signing.md, run as written: its shell blocks, in order, with SoftHSM2 as the offline HSM and the
// real kiln on PATH; then what the walk must refuse (a signature for other bytes, a tampered one).
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "core/bytes.hpp"
#include "core/files.hpp"
#include "signing/file_key.hpp"
#include "signing/mcuboot_image.hpp"
#include "signing/signer.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/vectors.hpp"

using namespace kiln;
namespace fs = std::filesystem;

namespace {

// The ```sh blocks of the document, in order.
std::vector<std::string> shell_blocks(const std::string& markdown) {
  std::vector<std::string> blocks;
  std::regex block("```sh\\n([\\s\\S]*?)```");
  for (auto it = std::sregex_iterator(markdown.begin(), markdown.end(), block); it != std::sregex_iterator(); ++it)
    blocks.push_back((*it)[1].str());
  return blocks;
}

test::ProcessResult run_shell(const test::TempDir& dir, const std::string& script) {
  test::ProcessOptions options;
  options.cwd = dir.path().string();
  options.env["PATH"] = fs::path(test::bin_path("kiln")).parent_path().string() + ":/usr/bin:/bin";
  options.timeout_seconds = 300;
  return test::run_process("/bin/bash", {"-euo", "pipefail", "-c", script}, options);
}

// The environment the walk's first block exports, for commands run after it.
const std::string walk_env =
    "export SOFTHSM2_CONF=$PWD/softhsm2.conf KILN_PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so "
    "KILN_PKCS11_PIN=1234\n";

}  // namespace

TEST_CASE("docs/offline-signing.md: the SoftHSM2 walk runs as written and yields a verified image and manifest") {
  std::string doc = read_text_file(std::string(KILN_SOURCE_DIR) + "/docs/offline-signing.md");
  auto blocks = shell_blocks(doc);
  REQUIRE(blocks.size() == 5);
  test::TempDir dir;
  fs::copy_file(test::vector("mcuboot-more/app.bin"), dir.path() / "app.bin");
  std::string script;
  for (const auto& b : blocks) script += b + "\n";
  auto r = run_shell(dir, script);
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);

  // The digest is the image's hash TLV; the assembled image carries the token key's signature over it.
  Bytes image = read_file(dir.file("app.signed.bin"));
  auto parsed = mcuboot::parse_image(image);
  Bytes digest = read_file(dir.file("app.digest"));
  REQUIRE(digest.size() == 32);
  Bytes hashed(image.begin(), image.begin() + static_cast<std::ptrdiff_t>(mcuboot::hashed_size(parsed.header)));
  CHECK(kiln::digest(HashAlg::sha256, hashed) == digest);
  Bytes pub = load_public_key_file(dir.file("release.pub.pem"), std::nullopt);
  const mcuboot::TlvEntry* sig = nullptr;
  for (const auto& e : parsed.unprotected_area.entries)
    if (e.type == mcuboot::tlv::ecdsa_sig) sig = &e;
  REQUIRE(sig);
  CHECK(verify_signature(pub, digest, HashAlg::sha256, sig->value));
  // openssl agrees, with nothing of kiln's in the loop: the DER signature over the digest.
  write_file_atomic(dir.file("sig.der"), sig->value);
  auto o = test::run_process("/usr/bin/openssl", {"pkeyutl", "-verify", "-pubin", "-inkey", dir.file("release.pub.pem"),
                                                  "-in", dir.file("app.digest"), "-sigfile", dir.file("sig.der")});
  CHECK_MESSAGE(o.exit_code == 0, (o.out + o.err));

  // A manifest with one COSE signature that verifies; the private key never left the token.
  auto show = run_shell(dir, "kiln -o json manifest show app.suit");
  REQUIRE(show.exit_code == 0);
  CHECK(show.out.find("ES256") != std::string::npos);
  auto keys = run_shell(dir, walk_env + "pkcs11-tool --module $KILN_PKCS11_MODULE --login --pin 1234 --list-objects "
                                        "--type privkey");
  REQUIRE(keys.exit_code == 0);
  CHECK(keys.out.find("release") != std::string::npos);

  SUBCASE("a signature over other bytes is refused: exit 3, nothing written") {
    auto bad = run_shell(dir, "kiln image sign app.bin other.bin --fix-sig app.sig.b64 --fix-sig-pubkey release.pub.pem "
                              "--version 1.2.4 --header-size 0x200 --slot-size 0x40000 --pad-header");
    CHECK(bad.exit_code == 3);
    CHECK(!fs::exists(dir.path() / "other.bin"));
  }
  SUBCASE("a tampered manifest signature is refused: exit 3, the envelope unchanged") {
    Bytes before = read_file(dir.file("app.suit"));
    auto bad = run_shell(dir, walk_env +
                                  "kiln manifest create --component app.signed.bin --vendor-domain example.com "
                                  "--class-name board-rev-b --sequence 2 --unsigned -o two.suit\n"
                                  "kiln manifest sign two.suit --signature app.suit.sig --signer-public-key release.pub.pem");
    CHECK(bad.exit_code == 3);
    auto listing = run_shell(dir, "kiln -o json manifest show two.suit");
    CHECK(listing.out.find("ES256") == std::string::npos);
    CHECK(read_file(dir.file("app.suit")) == before);
  }
  SUBCASE("the manifest's to-be-signed payload can be signed by openssl too") {
    auto ok = run_shell(dir, walk_env +
                                 "kiln manifest create --component app.signed.bin --vendor-domain example.com "
                                 "--class-name board-rev-b --sequence 3 --unsigned -o three.suit\n"
                                 "kiln manifest sign three.suit --vector-to-sign payload --signer-public-key "
                                 "release.pub.pem -o tbs.bin\n"
                                 "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ext.pem\n"
                                 "openssl pkey -in ext.pem -pubout -out ext.pub.pem\n"
                                 "kiln manifest sign three.suit --vector-to-sign payload --signer-public-key ext.pub.pem "
                                 "-o tbs.bin --force\n"
                                 "openssl dgst -sha256 -sign ext.pem -out tbs.sig tbs.bin\n"
                                 "kiln manifest sign three.suit --signature tbs.sig --signer-public-key ext.pub.pem\n"
                                 "kiln manifest verify three.suit --key ext.pub.pem");
    CHECK_MESSAGE(ok.exit_code == 0, ok.err);
  }
}
