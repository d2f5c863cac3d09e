// End-to-end tests of `kiln manifest`: the real binary against the draft's vectors and fresh keys.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "core/files.hpp"
#include "tests/support/process.hpp"
#include "tests/support/vectors.hpp"
#include "tests/support/temp_dir.hpp"

using kiln::as_bytes;
using kiln::Bytes;
using kiln::read_file;
using kiln::write_file_atomic;
namespace test = kiln::test;
using Json = nlohmann::json;

namespace {

test::ProcessResult run_kiln(const std::vector<std::string>& args) {
  return test::kiln(args);
}

std::string vector(const std::string& name) {
  return test::vector("suit/" + name);
}

Json json_of(const test::ProcessResult& r) {
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return Json::parse(r.out);
}

std::string generate_key(const test::TempDir& dir, const std::string& type) {
  std::string path = dir.file(type + ".pem");
  auto r = run_kiln({"key", "generate", "--type", type, "-o", path});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return path;
}

}  // namespace

TEST_CASE("manifest e2e: show -o json then encode reproduces every draft envelope") {
  test::TempDir dir;
  for (const char* name :
       {"example0.signed.suit", "example1.unsigned.suit", "example2.signed.suit", "example2.severed.suit",
        "example3.signed.suit", "example4.signed.suit", "example5.unsigned.suit"}) {
    CAPTURE(name);
    auto shown = run_kiln({"manifest", "show", vector(name), "-o", "json"});
    REQUIRE(shown.exit_code == 0);
    write_file_atomic(dir.file("m.json"), as_bytes(shown.out));
    auto encoded = run_kiln({"manifest", "encode", dir.file("m.json"), "--force", "-o", dir.file("m.suit")});
    INFO(encoded.err);
    REQUIRE(encoded.exit_code == 0);
    CHECK(read_file(dir.file("m.suit")) == read_file(vector(name)));
  }
}

TEST_CASE("manifest e2e: the readable view shows what a person checks first") {
  auto r = run_kiln({"manifest", "show", vector("example2.signed.suit")});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("manifest-sequence-number  2") != std::string::npos);
  CHECK(r.out.find("ES256") != std::string::npos);
  CHECK(r.out.find("install (severable, present)") != std::string::npos);
  auto severed = run_kiln({"manifest", "show", vector("example2.severed-signed.suit")});
  CHECK(severed.out.find("install (severed)") != std::string::npos);
}

TEST_CASE("manifest e2e: create --from exampleN.json with the draft key matches the draft but for the signature") {
  test::TempDir dir;
  for (int n = 0; n <= 5; ++n) {
    CAPTURE(n);
    std::string out = dir.file("ex.suit");
    auto r = run_kiln({"manifest", "create", "--from", vector("example" + std::to_string(n) + ".json"), "--key",
                       vector("draft_private_key.pem"), "--force", "-o", out});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    Bytes ours = read_file(out), theirs = read_file(vector("example" + std::to_string(n) + ".signed.suit"));
    REQUIRE(ours.size() == theirs.size());
    // The ES256 signature is the 64 bytes after the COSE header at offset 57 in every example.
    std::size_t differing = 0;
    for (std::size_t i = 0; i < ours.size(); ++i)
      if (ours[i] != theirs[i]) {
        CHECK(i >= 57);
        CHECK(i < 57 + 64);
        ++differing;
      }
    CHECK(differing > 0);
    CHECK(run_kiln({"manifest", "verify", out, "--key", vector("draft_public_key.pem")}).exit_code == 0);
  }
}

TEST_CASE("manifest e2e: create from options, verify image, sequence floor and wrong image") {
  test::TempDir dir;
  std::string key = generate_key(dir, "ecdsa-p256");
  write_file_atomic(dir.file("app.bin"), Bytes(5000, 0xa5));
  write_file_atomic(dir.file("other.bin"), Bytes(5000, 0xa6));
  std::string envelope = dir.file("app.suit");
  auto created = json_of(run_kiln({"manifest",
                                   "create",
                                   "--component",
                                   dir.file("app.bin"),
                                   "--uri",
                                   "https://fw.example.com/app.bin",
                                   "--vendor-domain",
                                   "arm.com",
                                   "--class-name",
                                   "suit",
                                   "--sequence",
                                   "42",
                                   "--key",
                                   key,
                                   "--description",
                                   "app 1.2",
                                   "-o",
                                   envelope,
                                   "--output",
                                   "json"}));
  CHECK(created["manifest-sequence-number"] == 42);
  CHECK(created["signatures"][0] == "ES256");

  auto shown = json_of(run_kiln({"manifest", "show", envelope, "-o", "json"}));
  const auto& params = shown["manifest"]["common"]["shared-sequence"][0]["directive-override-parameters"];
  CHECK(params["vendor-id"] == "fa6b4a53-d5ad-5fdf-be9d-e663e4d41ffe");
  CHECK(params["class-id"] == "1492af14-2569-5e48-bf42-9b2d51f2ab45");
  CHECK(params["image-size"] == 5000);
  CHECK(shown["manifest"]["text"]["en-US"]["manifest-description"] == "app 1.2");

  auto ok =
      run_kiln({"manifest", "verify", envelope, "--key", key, "--image", dir.file("app.bin"), "--min-sequence", "42"});
  INFO(ok.err);
  CHECK(ok.exit_code == 0);

  auto wrong_image = run_kiln({"manifest", "verify", envelope, "--key", key, "--image", dir.file("other.bin")});
  CHECK(wrong_image.exit_code == 3);
  CHECK(wrong_image.err.find("matches no image-digest") != std::string::npos);

  auto rollback = run_kiln({"manifest", "verify", envelope, "--key", key, "--min-sequence", "43"});
  CHECK(rollback.exit_code == 3);
  CHECK(rollback.err.find("below the minimum 43") != std::string::npos);

  auto draft_key = run_kiln({"manifest", "verify", envelope, "--key", vector("draft_public_key.pem")});
  CHECK(draft_key.exit_code == 3);
  CHECK(draft_key.err.find("no signature in the envelope verifies") != std::string::npos);
}

TEST_CASE("manifest e2e: sequence auto is seconds since the epoch") {
  test::TempDir dir;
  write_file_atomic(dir.file("app.bin"), Bytes(10, 1));
  auto before = static_cast<std::uint64_t>(std::time(nullptr));
  auto created =
      json_of(run_kiln({"manifest", "create", "--component", dir.file("app.bin"), "--vendor-domain", "example.com",
                        "--sequence", "auto", "--unsigned", "-o", dir.file("a.suit"), "--output", "json"}));
  auto seq = created["manifest-sequence-number"].get<std::uint64_t>();
  CHECK(seq >= before);
  CHECK(seq <= before + 60);
}

TEST_CASE("manifest e2e: several signers, Ed25519 deterministic, sever keeps the signatures valid") {
  test::TempDir dir;
  std::string ec = generate_key(dir, "ecdsa-p384");
  std::string ed = generate_key(dir, "ed25519");
  std::string file = dir.file("ex2.suit");
  write_file_atomic(file, read_file(vector("example2.signed.suit")));

  auto signed_twice = json_of(run_kiln({"manifest", "sign", file, "--key", ec, "--key", ed, "--output", "json"}));
  CHECK(signed_twice["signatures"].dump() == R"(["ES256","ES384","EdDSA"])");
  CHECK(run_kiln({"manifest", "verify", file, "--key", vector("draft_public_key.pem"), "--key", ec, "--key", ed})
            .exit_code == 0);

  auto severed = json_of(run_kiln({"manifest", "sever", file, "-o", dir.file("severed.suit"), "--output", "json"}));
  CHECK(severed["severed"].dump() == R"(["install","text"])");
  CHECK(run_kiln({"manifest", "verify", dir.file("severed.suit"), "--key", ed}).exit_code == 0);

  // The draft's own envelope severs to the draft's severed envelope.
  CHECK(
      run_kiln({"manifest", "sever", vector("example2.signed.suit"), "-o", dir.file("draft-severed.suit")}).exit_code ==
      0);
  CHECK(read_file(dir.file("draft-severed.suit")) == read_file(vector("example2.severed-signed.suit")));

  // Ed25519 signatures are deterministic: the same input gives the same bytes.
  write_file_atomic(dir.file("app.bin"), Bytes(64, 7));
  for (const char* out : {"d1.suit", "d2.suit"})
    REQUIRE(run_kiln({"manifest", "create", "--component", dir.file("app.bin"), "--vendor-domain", "example.com",
                      "--sequence", "1", "--key", ed, "-o", dir.file(out)})
                .exit_code == 0);
  CHECK(read_file(dir.file("d1.suit")) == read_file(dir.file("d2.suit")));
}

TEST_CASE("manifest e2e: bad input and bad usage get the documented exit codes") {
  test::TempDir dir;
  Bytes broken = read_file(vector("example0.signed.suit"));
  broken.resize(150);
  write_file_atomic(dir.file("broken.suit"), broken);
  auto shown = run_kiln({"manifest", "show", dir.file("broken.suit")});
  CHECK(shown.exit_code == 1);
  CHECK(shown.err.find("at offset") != std::string::npos);
  auto verified = run_kiln({"manifest", "verify", dir.file("broken.suit"), "--key", vector("draft_public_key.pem")});
  CHECK(verified.exit_code == 3);
  CHECK(verified.err.find("not a valid SUIT envelope") != std::string::npos);

  write_file_atomic(dir.file("app.bin"), Bytes(10, 1));
  auto no_key = run_kiln({"manifest", "create", "--component", dir.file("app.bin"), "--vendor-domain", "x.com",
                          "--sequence", "1", "-o", dir.file("x.suit")});
  CHECK(no_key.exit_code == 2);
  CHECK_FALSE(std::filesystem::exists(dir.file("x.suit")));
  auto unsigned_verify =
      run_kiln({"manifest", "verify", vector("example0.unsigned.suit"), "--key", vector("draft_public_key.pem")});
  CHECK(unsigned_verify.exit_code == 3);
  CHECK(run_kiln({"manifest", "verify", vector("example0.unsigned.suit"), "--unsigned"}).exit_code == 0);
  CHECK(run_kiln({"manifest", "create", "--from", vector("example0.json"), "--sequence", "3", "--unsigned", "-o",
                  dir.file("y.suit")})
            .exit_code == 2);
}

TEST_CASE("manifest e2e: PKCS#11 token keys sign and verify manifests (SoftHSM2)") {
  const std::string module = "/usr/lib/softhsm/libsofthsm2.so";
  test::TempDir dir;
  std::filesystem::create_directory(dir.path() / "tokens");
  write_file_atomic(dir.file("softhsm2.conf"),
                    as_bytes("directories.tokendir = " + dir.file("tokens") + "\nobjectstore.backend = file\n"));
  test::ProcessOptions env;
  env.env = {{"SOFTHSM2_CONF", dir.file("softhsm2.conf")}, {"KILN_PKCS11_MODULE", module}, {"KILN_PKCS11_PIN", "1234"}};
  auto tool = [&](const std::string& program, const std::vector<std::string>& args) {
    auto r = test::run_process("/usr/bin/" + program, args, env);
    INFO(program << ": " << r.err);
    REQUIRE(r.exit_code == 0);
  };
  tool("softhsm2-util", {"--init-token", "--free", "--label", "T", "--pin", "1234", "--so-pin", "5678"});
  tool("pkcs11-tool", {"--module", module, "--login", "--pin", "1234", "--keypairgen", "--key-type", "EC:prime256v1",
                       "--id", "01", "--label", "p256"});
  tool("pkcs11-tool", {"--module", module, "--login", "--pin", "1234", "--keypairgen", "--key-type", "EC:secp384r1",
                       "--id", "02", "--label", "p384"});
  write_file_atomic(dir.file("app.bin"), Bytes(1000, 3));
  auto run = [&](const std::vector<std::string>& args) { return test::kiln(args, env); };

  auto created = json_of(
      run({"manifest", "create", "--component", dir.file("app.bin"), "--vendor-domain", "example.com", "--sequence",
           "5", "--key", "pkcs11:token=T;object=p256", "-o", dir.file("m.suit"), "--output", "json"}));
  CHECK(created["signatures"].dump() == R"(["ES256"])");
  auto signed_again =
      json_of(run({"manifest", "sign", dir.file("m.suit"), "--key", "pkcs11:token=T;object=p384", "--output", "json"}));
  CHECK(signed_again["signatures"].dump() == R"(["ES256","ES384"])");
  auto verified = run({"manifest", "verify", dir.file("m.suit"), "--key", "pkcs11:token=T;object=p256", "--key",
                       "pkcs11:token=T;object=p384", "--image", dir.file("app.bin")});
  INFO(verified.err);
  CHECK(verified.exit_code == 0);
}
