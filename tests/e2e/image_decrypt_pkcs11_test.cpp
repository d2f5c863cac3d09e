// End to end: image-encryption keys on a PKCS#11 token (SoftHSM2). `kiln image decrypt --key pkcs11:…` and
// `kiln image verify --decrypt-key pkcs11:…` open imgtool's ECIES-P256 vector with the key agreement running on
// the token; the private key never leaves it. (RSA-OAEP runs on tokens that support SHA-256 OAEP; SoftHSM2 2.6
// does OAEP with SHA-1 only, which kiln names.)
#include <doctest/doctest.h>

#include <filesystem>

#include "core/bytes.hpp"
#include "core/files.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/vectors.hpp"

using namespace kiln;
namespace fs = std::filesystem;

namespace {

std::string more(const std::string& name) { return test::vector("mcuboot-more/" + name); }

struct Token {
  test::TempDir dir;
  test::ProcessOptions env;
  const std::string module = "/usr/lib/softhsm/libsofthsm2.so";
  Token() {
    REQUIRE(fs::exists(module));
    fs::create_directories(dir.path() / "tokens");
    write_file_atomic(dir.file("softhsm2.conf"), as_bytes("directories.tokendir = " + dir.file("tokens") + "\n"));
    env.env["SOFTHSM2_CONF"] = dir.file("softhsm2.conf");
    REQUIRE(test::run_process("/usr/bin/softhsm2-util",
                              {"--init-token", "--free", "--label", "T", "--pin", "1234", "--so-pin", "5678"}, env)
                .exit_code == 0);
    env.env["KILN_PKCS11_MODULE"] = module;
    env.env["KILN_PKCS11_PIN"] = "1234";
  }
  // Writes a PEM key's private and public halves to the token as object `label`, usable for key agreement
  // (CKA_DERIVE) and decryption, as an image-encryption key must be.
  void import(const std::string& pem, const std::string& label, const std::string& id) {
    for (auto [type, pubout] : {std::pair{"privkey", false}, std::pair{"pubkey", true}}) {
      auto der = dir.file(label + "." + type + ".der");
      std::vector<std::string> convert{"pkey", "-in", pem, "-outform", "DER", "-out", der};
      if (pubout) convert.push_back("-pubout");
      REQUIRE(test::run_process("/usr/bin/openssl", convert).exit_code == 0);
      std::vector<std::string> write{"--module", module, "--login", "--pin", "1234", "--write-object", der, "--type",
                                     type, "--label", label, "--id", id};
      if (std::string(pem).find("rsa") == std::string::npos) write.push_back("--usage-derive");
      else write.push_back("--usage-decrypt");
      auto r = test::run_process("/usr/bin/pkcs11-tool", write, env);
      REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    }
  }
};

}  // namespace

TEST_CASE("image decrypt: an ECIES-P256 key on a PKCS#11 token opens imgtool's encrypted vector") {
  Token token;
  token.import(more("enc-p256.pem"), "enc-p256", "01");
  token.import(more("enc-rsa2048.pem"), "enc-rsa", "02");
  for (auto [image, uri] : {std::pair{"enc-p256-aes128.signed.bin", "pkcs11:token=T;object=enc-p256"}}) {
    const std::string vector = image;  // a named copy: clang 14 lambdas cannot capture bindings
    CAPTURE(vector);
    auto out = token.dir.file(std::string(image) + ".plain");
    auto r = test::kiln({"image", "decrypt", more(image), out, "--key", uri}, token.env);
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    Bytes plain = read_file(out);
    CHECK(Bytes(plain.begin() + 0x200, plain.begin() + 0x200 + static_cast<std::ptrdiff_t>(test::padded_more_app().size())) ==
          test::padded_more_app());
    // The same as with the key file.
    auto file_key = std::string(image).find("rsa") != std::string::npos ? more("enc-rsa2048.pem") : more("enc-p256.pem");
    r = test::kiln({"image", "decrypt", more(image), token.dir.file("file.plain"), "--key", file_key});
    REQUIRE(r.exit_code == 0);
    CHECK(read_file(token.dir.file("file.plain")) == plain);
    auto v = test::kiln({"image", "verify", more(image), "-k", more("ed25519.pem"), "--decrypt-key", uri}, token.env);
    CHECK_MESSAGE(v.exit_code == 0, v.err);
  }
  // SoftHSM2 cannot do MCUboot's RSA-OAEP (SHA-256): said so, exit 2, nothing written.
  auto rsa = test::kiln({"image", "decrypt", more("enc-rsa2048-aes128.signed.bin"), token.dir.file("rsa.bin"), "--key",
                         "pkcs11:token=T;object=enc-rsa"},
                        token.env);
  CHECK(rsa.exit_code == 2);
  CHECK_MESSAGE(rsa.err.find("does not decrypt RSA-OAEP with SHA-256") != std::string::npos, rsa.err);
  CHECK_FALSE(fs::exists(token.dir.file("rsa.bin")));
  // A token key of the other type, or one the image was not made for: exit 3, nothing written.
  auto wrong = test::kiln({"image", "decrypt", more("enc-p256-aes128.signed.bin"), token.dir.file("wrong.bin"), "--key",
                           "pkcs11:token=T;object=enc-rsa"},
                          token.env);
  CHECK(wrong.exit_code == 3);
  CHECK(wrong.err.find("wrapped for an ECIES-P256 key") != std::string::npos);
  CHECK_FALSE(fs::exists(token.dir.file("wrong.bin")));
  auto other = test::run_process("/usr/bin/pkcs11-tool",
                                 {"--module", token.module, "--login", "--pin", "1234", "--keypairgen", "--key-type",
                                  "EC:prime256v1", "--usage-derive", "--label", "other", "--id", "03"},
                                 token.env);
  REQUIRE_MESSAGE(other.exit_code == 0, other.err);
  auto mac = test::kiln({"image", "decrypt", more("enc-p256-aes128.signed.bin"), token.dir.file("mac.bin"), "--key",
                         "pkcs11:token=T;object=other"},
                        token.env);
  CHECK(mac.exit_code == 3);
  CHECK(mac.err.find("MAC does not match") != std::string::npos);
  CHECK_FALSE(fs::exists(token.dir.file("mac.bin")));
  // A token key that may only sign is named as such (exit 2), not taken for a wrong key.
  auto sign_only = test::kiln({"key", "generate", "-t", "ecdsa-p256", "--pkcs11", "pkcs11:token=T;object=signer;id=%04"},
                              token.env);
  REQUIRE_MESSAGE(sign_only.exit_code == 0, sign_only.err);
  auto no_derive = test::kiln({"image", "decrypt", more("enc-p256-aes128.signed.bin"), token.dir.file("nd.bin"), "--key",
                               "pkcs11:token=T;object=signer"},
                              token.env);
  CHECK(no_derive.exit_code == 2);
  CHECK(no_derive.err.find("does not permit key agreement") != std::string::npos);
  // A wrong PIN is an authentication failure (exit 6), as for signing.
  auto env = token.env;
  env.env["KILN_PKCS11_PIN"] = "0000";
  auto pin = test::kiln({"image", "decrypt", more("enc-p256-aes128.signed.bin"), token.dir.file("pin.bin"), "--key",
                         "pkcs11:token=T;object=enc-p256"},
                        env);
  CHECK(pin.exit_code == 6);
  CHECK(pin.err.find("0000") == std::string::npos);
}
