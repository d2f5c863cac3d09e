// End-to-end tests of the release options of `kiln image sign` (issue 16): the mcuboot-more vectors made by
// imgtool 2.4.0 reproduced by the kiln binary (byte for byte where deterministic, decrypting to app.bin
// where encrypted), `kiln image decrypt`, `verify --decrypt-key`, compressed images, and bad input.
#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/bytes.hpp"
#include "core/files.hpp"
#include "signing/mcuboot_image.hpp"
#include "signing/signer.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/vectors.hpp"

using namespace kiln;
namespace fs = std::filesystem;

namespace {

// A temp dir holding mcuboot-more's keys and inputs, so CASES.txt's relative names work unchanged.
struct Workspace {
  test::TempDir dir;
  Workspace() {
    for (auto& [name, hash] : test::pinned_vectors()) {
      fs::path path(name);
      if (path.parent_path() == "mcuboot-more") fs::copy_file(test::vector(name), dir.path() / path.filename());
    }
  }
  std::string file(const std::string& name) const { return dir.file(name); }
  test::ProcessResult kiln(std::vector<std::string> args) const {
    test::ProcessOptions options;
    options.cwd = dir.path().string();
    return test::kiln(args, options);
  }
};

using Case = test::ImgtoolCase;
std::vector<Case> read_cases() { return test::imgtool_cases("mcuboot-more/CASES.txt"); }

std::string arg_after(const Case& c, const std::string& flag) {
  for (std::size_t i = 0; i + 1 < c.args.size(); ++i)
    if (c.args[i] == flag) return c.args[i + 1];
  return {};
}

Bytes body_of(const Bytes& image) {
  auto parsed = mcuboot::parse_image(image);
  return Bytes(image.begin() + parsed.header.header_size,
               image.begin() + parsed.header.header_size + parsed.header.image_size);
}

// An independent ECIES-P256 unwrap (OpenSSL directly, not kiln's code): ECDH with the ephemeral point,
// HKDF-SHA256 "MCUBoot_ECIES_v1", HMAC-SHA256 check, AES-128-CTR; then the body with AES-128-CTR.
Bytes openssl_decrypt_p256(const std::string& pem_path, const Bytes& image) {
  auto parsed = mcuboot::parse_image(image);
  const auto* tlv = mcuboot::find_tlv(parsed, 0x32);
  REQUIRE(tlv);
  REQUIRE(tlv->value.size() == 113);
  std::string pem = read_text_file(pem_path);
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* mine = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  REQUIRE(mine);
  Bytes spki = from_hex("3059301306072a8648ce3d020106082a8648ce3d030107034200");
  spki.insert(spki.end(), tlv->value.begin(), tlv->value.begin() + 65);
  const unsigned char* p = spki.data();
  EVP_PKEY* peer = d2i_PUBKEY(nullptr, &p, static_cast<long>(spki.size()));
  REQUIRE(peer);
  EVP_PKEY_CTX* dh = EVP_PKEY_CTX_new(mine, nullptr);
  Bytes shared(32);
  std::size_t shared_size = shared.size();
  REQUIRE(EVP_PKEY_derive_init(dh) == 1);
  REQUIRE(EVP_PKEY_derive_set_peer(dh, peer) == 1);
  REQUIRE(EVP_PKEY_derive(dh, shared.data(), &shared_size) == 1);
  EVP_PKEY_CTX_free(dh);
  EVP_PKEY_free(peer);
  EVP_PKEY_free(mine);
  EVP_PKEY_CTX* kdf = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr);
  REQUIRE(EVP_PKEY_derive_init(kdf) == 1);
  REQUIRE(EVP_PKEY_CTX_set_hkdf_md(kdf, EVP_sha256()) == 1);
  REQUIRE(EVP_PKEY_CTX_set1_hkdf_key(kdf, shared.data(), static_cast<int>(shared_size)) == 1);
  REQUIRE(EVP_PKEY_CTX_add1_hkdf_info(kdf, reinterpret_cast<const unsigned char*>("MCUBoot_ECIES_v1"), 16) == 1);
  Bytes derived(48);
  std::size_t derived_size = derived.size();
  REQUIRE(EVP_PKEY_derive(kdf, derived.data(), &derived_size) == 1);
  EVP_PKEY_CTX_free(kdf);
  unsigned char mac[32];
  unsigned int mac_size = 0;
  HMAC(EVP_sha256(), derived.data() + 16, 32, tlv->value.data() + 97, 16, mac, &mac_size);
  CHECK(Bytes(mac, mac + 32) == Bytes(tlv->value.begin() + 65, tlv->value.begin() + 97));
  auto ctr = [](const unsigned char* key, ByteView data) {
    Bytes out(data.size());
    unsigned char iv[16] = {};
    EVP_CIPHER_CTX* aes = EVP_CIPHER_CTX_new();
    int n = 0;
    REQUIRE(EVP_DecryptInit_ex(aes, EVP_aes_128_ctr(), nullptr, key, iv) == 1);
    REQUIRE(EVP_DecryptUpdate(aes, out.data(), &n, data.data(), static_cast<int>(data.size())) == 1);
    EVP_CIPHER_CTX_free(aes);
    return out;
  };
  Bytes content_key = ctr(derived.data(), ByteView(tlv->value.data() + 97, 16));
  return ctr(content_key.data(), body_of(image));
}

const std::vector<std::string> common = {"--version", "1.0.0", "--header-size", "0x200", "--slot-size", "0x40000",
                                         "--pad-header"};

std::vector<std::string> sign(std::vector<std::string> extra, const std::string& in, const std::string& out) {
  std::vector<std::string> args = {"image", "sign"};
  args.insert(args.end(), common.begin(), common.end());
  args.insert(args.end(), extra.begin(), extra.end());
  args.push_back(in);
  args.push_back(out);
  return args;
}

}  // namespace

TEST_CASE("image sign: every mcuboot-more case, run by kiln with imgtool's arguments") {
  Workspace ws;
  int deterministic = 0, encrypted = 0;
  for (const Case& c : read_cases()) {
    CAPTURE(c.output);
    // The same arguments, kiln's output beside imgtool's (and --sig-out to a file of kiln's own).
    std::vector<std::string> args = {"image", "sign"};
    for (const auto& a : c.args) {
      if (a == c.output) args.push_back("kiln-" + c.output);
      else if (a == arg_after(c, "--sig-out")) args.push_back("kiln-" + a);
      else args.push_back(a);
    }
    auto r = ws.kiln(args);
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    Bytes theirs = read_file(ws.file(c.output));
    Bytes ours = read_file(ws.file("kiln-" + c.output));
    std::string enc = arg_after(c, "-E");
    if (enc.empty()) {
      ++deterministic;
      CHECK(ours == theirs);
      if (auto sig_out = arg_after(c, "--sig-out"); !sig_out.empty())
        CHECK(read_file(ws.file("kiln-" + sig_out)) == read_file(ws.file(sig_out)));
      continue;
    }
    ++encrypted;
    // Random content key: not the same bytes, but the same header and hash, and it decrypts to app.bin.
    CHECK(ours.size() == theirs.size());
    CHECK(Bytes(ours.begin(), ours.begin() + 0x200) == Bytes(theirs.begin(), theirs.begin() + 0x200));
    CHECK(mcuboot::find_tlv(mcuboot::parse_image(ours), mcuboot::tlv::sha256)->value ==
          mcuboot::find_tlv(mcuboot::parse_image(theirs), mcuboot::tlv::sha256)->value);
    bool clear = std::find(c.args.begin(), c.args.end(), "-c") != c.args.end();
    CHECK((body_of(ours) == test::padded_more_app()) == clear);
    if (enc == "enc-p256.pem" && !clear) CHECK(openssl_decrypt_p256(ws.file(enc), ours) == test::padded_more_app());
    for (const auto& file : {c.output, "kiln-" + c.output}) {
      CAPTURE(file);
      auto v = ws.kiln({"image", "verify", file, "--key", "ed25519.pem", "--decrypt-key", enc});
      CHECK_MESSAGE(v.exit_code == 0, v.err);
      if (clear) continue;
      auto d = ws.kiln({"image", "decrypt", file, "plain-" + file, "--key", enc});
      REQUIRE_MESSAGE(d.exit_code == 0, d.err);
      Bytes plain = read_file(ws.file("plain-" + file));
      CHECK(body_of(plain) == test::padded_more_app());
      auto pv = ws.kiln({"image", "verify", "plain-" + file, "--key", "ed25519.pem"});
      CHECK_MESSAGE(pv.exit_code == 0, pv.err);
    }
  }
  CHECK(deterministic == 7);
  CHECK(encrypted == 4);
}

TEST_CASE("image decrypt / verify: the wrong key is exit 3 and writes nothing; without a key verify says what it skipped") {
  Workspace ws;
  auto d = ws.kiln({"image", "decrypt", "enc-p256-aes128.signed.bin", "out.bin", "--key", "enc-x25519.pem"});
  CHECK(d.exit_code == 3);
  CHECK(d.err.find("ECIES-P256") != std::string::npos);
  CHECK(!fs::exists(ws.file("out.bin")));
  // Another P-256 key: the MAC does not match.
  auto k = test::run_process("/usr/bin/openssl", {"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                                                  "-out", ws.file("other-p256.pem")});
  REQUIRE(k.exit_code == 0);
  d = ws.kiln({"image", "decrypt", "enc-p256-aes128.signed.bin", "out.bin", "--key", "other-p256.pem"});
  CHECK(d.exit_code == 3);
  CHECK(d.err.find("MAC") != std::string::npos);
  CHECK(!fs::exists(ws.file("out.bin")));
  d = ws.kiln({"image", "decrypt", "enc-rsa2048-aes128.signed.bin", "out.bin", "--key", "enc-p256.pem"});
  CHECK(d.exit_code == 3);

  auto v = ws.kiln({"image", "verify", "enc-x25519-aes128.signed.bin", "--key", "ed25519.pem", "-o", "json"});
  CHECK_MESSAGE(v.exit_code == 0, v.err);
  auto j = nlohmann::json::parse(v.out);
  CHECK(j["result"] == "partly-checked");
  CHECK(j["unchecked"].size() == 1);
  CHECK(v.err.find("not checked") != std::string::npos);
  v = ws.kiln({"image", "verify", "enc-x25519-aes128.signed.bin", "--key", "ed25519.pem", "--decrypt-key",
               "enc-x25519.pem", "-o", "json"});
  CHECK_MESSAGE(v.exit_code == 0, v.err);
  CHECK(nlohmann::json::parse(v.out)["result"] == "ok");
  // Encrypted but signed by another key: the signature over the carried digest still fails without the key.
  v = ws.kiln({"image", "verify", "enc-x25519-aes128.signed.bin", "--key", "ecdsa-p256.pem"});
  CHECK(v.exit_code == 3);
}

TEST_CASE("image decrypt: an altered or truncated encryption TLV, or an altered body, is exit 3 with nothing written") {
  Workspace ws;
  Bytes image = read_file(ws.file("enc-p256-aes128.signed.bin"));
  auto parsed = mcuboot::parse_image(image);
  const auto* tlv = mcuboot::find_tlv(parsed, 0x32);
  REQUIRE(tlv);
  // A flipped bit in the wrapped key: the MAC says no.
  Bytes altered = image;
  altered[tlv->offset + 112] ^= 0x01;
  write_file_atomic(ws.file("altered.bin"), altered);
  // One byte cut from the TLV (its length and the area's total adjusted): not an ECIES-P256 TLV any more.
  REQUIRE(tlv->offset + 113 == image.size());  // the key TLV ends the image
  Bytes truncated(image.begin(), image.begin() + static_cast<std::ptrdiff_t>(tlv->offset + 112));
  std::size_t area = parsed.unprotected_area.offset;
  std::uint16_t total = static_cast<std::uint16_t>(get_le16(truncated, area + 2) - 1);
  truncated[area + 2] = static_cast<std::uint8_t>(total & 0xff);
  truncated[area + 3] = static_cast<std::uint8_t>(total >> 8);
  truncated[tlv->offset - 2] = 112;
  write_file_atomic(ws.file("truncated.bin"), truncated);
  // A flipped bit in the body: the key opens, the plaintext does not match the hash.
  Bytes body = image;
  body[0x200 + 1000] ^= 0x80;
  write_file_atomic(ws.file("body.bin"), body);
  for (auto name : {"altered.bin", "truncated.bin", "body.bin"}) {
    CAPTURE(name);
    auto d = ws.kiln({"image", "decrypt", name, "out.bin", "--key", "enc-p256.pem"});
    CHECK(d.exit_code == 3);
    CHECK(!fs::exists(ws.file("out.bin")));
    auto v = ws.kiln({"image", "verify", name, "--key", "ed25519.pem", "--decrypt-key", "enc-p256.pem"});
    CHECK(v.exit_code == 3);
  }
  // Decrypting something that is not encrypted is a usage error.
  CHECK(ws.kiln({"image", "decrypt", "ed25519-pure.signed.bin", "out.bin", "--key", "enc-p256.pem"}).exit_code == 2);
}

TEST_CASE("image sign -E: every key type, AES-256, HMAC-SHA512, compression and --pad round-trip through kiln") {
  Workspace ws;
  struct Variant {
    std::string enc;
    std::vector<std::string> extra;
    std::uint16_t tlv;
  };
  for (const auto& v : std::vector<Variant>{{"enc-p256.pem", {}, 0x32},
                                            {"enc-p256.pem", {"--encrypt-keylen", "256"}, 0x32},
                                            {"enc-x25519.pem", {"--hmac-sha", "512"}, 0x34},
                                            {"enc-rsa2048.pem", {"--encrypt-keylen", "256", "--save-enctlv", "--pad"}, 0x30},
                                            {"enc-x25519.pem", {"--compression", "lzma2armthumb", "--confirm"}, 0x33}}) {
    CAPTURE(v.enc);
    CAPTURE(v.extra.size());
    std::vector<std::string> extra = {"-k", "ed25519.pem", "-E", v.enc};
    extra.insert(extra.end(), v.extra.begin(), v.extra.end());
    std::string input = std::find(v.extra.begin(), v.extra.end(), "--compression") != v.extra.end() ? "compressible.bin"
                                                                                                      : "app.bin";
    extra.push_back("--force");
    auto r = ws.kiln(sign(extra, input, "enc.bin"));
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    Bytes image = read_file(ws.file("enc.bin"));
    auto parsed = mcuboot::parse_image(image);
    CHECK(mcuboot::find_tlv(parsed, v.tlv));
    bool aes256 = std::find(v.extra.begin(), v.extra.end(), "256") != v.extra.end();
    CHECK((parsed.header.flags & (aes256 ? 0x08u : 0x04u)) != 0);
    auto i = ws.kiln({"image", "info", "enc.bin", "--key", "ed25519.pem", "--decrypt-key", v.enc, "-o", "json"});
    REQUIRE_MESSAGE(i.exit_code == 0, i.err);
    auto j = nlohmann::json::parse(i.out);
    CHECK(j["verification"]["result"] == "ok");
    CHECK(j["encryption"]["decrypted"] == true);
    auto d = ws.kiln({"image", "decrypt", "enc.bin", "dec.bin", "--key", v.enc, "--force"});
    REQUIRE_MESSAGE(d.exit_code == 0, d.err);
    auto pv = ws.kiln({"image", "verify", "dec.bin", "--key", "ed25519.pem"});
    CHECK_MESSAGE(pv.exit_code == 0, pv.err);
    if (input == "compressible.bin") {
      CHECK(j["compression"]["decompressed_ok"] == true);
      CHECK(mcuboot::find_tlv(parsed, 0x73));  // COMP_DEC_SIZE: the compressed size before padding for AES
      CHECK(parsed.header.image_size < 60000);
    } else {
      CHECK(body_of(read_file(ws.file("dec.bin"))) == test::padded_more_app());
    }
    if (std::find(v.extra.begin(), v.extra.end(), "--pad") != v.extra.end() ||
        std::find(v.extra.begin(), v.extra.end(), "--confirm") != v.extra.end()) {
      CHECK(image.size() == 0x40000);
      CHECK(parsed.trailer.magic_found);
    }
  }
}

TEST_CASE("image sign --compression: imgtool's bytes, fallback when it does not shrink, slot overflow refused") {
  Workspace ws;
  // app.bin is random: LZMA2 does not shrink it, so the image is the plain one (as imgtool does).
  auto r = ws.kiln(sign({"-k", "ed25519.pem", "--compression", "lzma2", "-o", "json"}, "app.bin", "c.bin"));
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(nlohmann::json::parse(r.out)["compressed"] == false);
  CHECK(read_file(ws.file("c.bin")) == read_file(ws.file("ed25519-sigout.signed.bin")));
  // The decompressed image must fit the slot the bootloader decompresses into: exit 2, nothing written.
  r = ws.kiln({"image", "sign", "-k", "ed25519.pem", "--version", "1.0.0", "--header-size", "0x200", "--slot-size",
               "0x9000", "--pad-header", "--compression", "lzma2", "compressible.bin", "small.bin"});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("decompress") != std::string::npos);
  CHECK(!fs::exists(ws.file("small.bin")));
  // imgtool needs --pad-header for compression.
  r = ws.kiln({"image", "sign", "-k", "ed25519.pem", "--version", "1.0.0", "--header-size", "0x200", "--slot-size",
               "0x40000", "--compression", "lzma2", "compressible.bin", "nohdr.bin"});
  CHECK(r.exit_code == 2);
  // A compressed payload altered after signing: the image hash says no.
  Bytes lzma = read_file(ws.file("ed25519-lzma2.signed.bin"));
  lzma[0x200 + 2000] ^= 0x01;
  write_file_atomic(ws.file("bad-lzma.bin"), lzma);
  CHECK(ws.kiln({"image", "verify", "bad-lzma.bin", "--key", "ed25519.pem"}).exit_code == 3);
}

TEST_CASE("image verify: a compressed image asking for a 4 GiB dictionary is refused without allocating it") {
  Workspace ws;
  // Re-sign a compressed payload whose LZMA2 header asks for the largest dictionary (code 40): the hash and
  // signature are fine, so only the decoder's limit stands between the file and 4 GiB of memory.
  Bytes lzma = read_file(ws.file("ed25519-lzma2.signed.bin"));
  auto parsed = mcuboot::parse_image(lzma);
  Bytes payload(lzma.begin() + 0x200, lzma.begin() + 0x200 + parsed.header.image_size);
  payload[0] = 40;
  write_file_atomic(ws.file("hostile.lzma"), payload);
  // Build the image by hand around it: kiln's sign would compress again. Header + payload + protected TLVs,
  // then the unprotected hash TLV over them (unsigned, so `--hash-only` checks it).
  Bytes image(lzma.begin(), lzma.begin() + 0x200);
  image.insert(image.end(), payload.begin(), payload.end());
  Bytes prot(lzma.begin() + 0x200 + parsed.header.image_size,
             lzma.begin() + 0x200 + parsed.header.image_size + parsed.header.protected_tlv_size);
  image.insert(image.end(), prot.begin(), prot.end());
  Bytes hash = digest(HashAlg::sha256, image);
  Bytes area = mcuboot::encode_tlv_area(mcuboot::tlv_info_magic, std::vector<mcuboot::Tlv>{{mcuboot::tlv::sha256, hash}});
  image.insert(image.end(), area.begin(), area.end());
  write_file_atomic(ws.file("hostile.bin"), image);
  auto v = ws.kiln({"image", "verify", "hostile.bin", "--hash-only"});
  CHECK(v.exit_code == 3);
  CHECK(v.err.find("dictionary") != std::string::npos);
}

TEST_CASE("image sign: external signing bad input and option rules (imgtool's, each with its exit code)") {
  Workspace ws;
  // Unsupported encryption key type; incompatible signing and encryption keys (imgtool's rule).
  auto r = ws.kiln(sign({"-k", "ed25519.pem", "-E", "ed25519.pem"}, "app.bin", "x.bin"));
  CHECK(r.exit_code == 2);
  r = ws.kiln(sign({"-k", "ecdsa-p256.pem", "-E", "enc-x25519.pem"}, "app.bin", "x.bin"));
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("same type of key") != std::string::npos);
  r = ws.kiln(sign({"-k", "ecdsa-p256.pem", "-E", "enc-p256.pem"}, "app.bin", "x.bin"));
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  CHECK(ws.kiln(sign({"-k", "ed25519.pem", "-E", "enc-p256.pem", "--hmac-sha", "512"}, "app.bin", "y.bin")).exit_code ==
        2);
  CHECK(ws.kiln(sign({"-k", "ecdsa-p256.pem", "--pure"}, "app.bin", "y.bin")).exit_code == 2);
  CHECK(ws.kiln(sign({"-k", "ed25519.pem", "--fix-sig", "ext.sig.b64", "--fix-sig-pubkey", "ecdsa-p256.pub.pem"},
                     "app.bin", "y.bin"))
            .exit_code == 2);
  CHECK(ws.kiln(sign({"--fix-sig", "ext.sig.b64"}, "app.bin", "y.bin")).exit_code == 2);
  // A fixed signature that does not verify (wrong key, or another image's): exit 3, nothing written.
  r = ws.kiln(sign({"--fix-sig", "ext.sig.b64", "--fix-sig-pubkey", "ed25519.pem"}, "app.bin", "y.bin"));
  CHECK(r.exit_code == 3);
  r = ws.kiln(sign({"--fix-sig", "ext.sig.b64", "--fix-sig-pubkey", "ecdsa-p256.pub.pem"}, "compressible.bin", "y.bin"));
  CHECK(r.exit_code == 3);
  CHECK(!fs::exists(ws.file("y.bin")));
  // --pad-sig: a 72-byte ECDSA signature that kiln (like MCUboot) still verifies.
  r = ws.kiln(sign({"-k", "ecdsa-p256.pem", "--pad-sig"}, "app.bin", "padded.bin"));
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(mcuboot::find_tlv(mcuboot::parse_image(read_file(ws.file("padded.bin"))), mcuboot::tlv::ecdsa_sig)->value.size() == 72);
  auto v = ws.kiln({"image", "verify", "padded.bin", "--key", "ecdsa-p256.pub.pem"});
  CHECK_MESSAGE(v.exit_code == 0, v.err);
}

TEST_CASE("image sign: --vector-to-sign digest, signed by openssl, assembled with --fix-sig, verifies") {
  Workspace ws;
  // The public key is enough to say which key will sign: the vector does not need the private one.
  auto r = ws.kiln(sign({"--fix-sig-pubkey", "ecdsa-p256.pub.pem", "--vector-to-sign", "digest"}, "compressible.bin",
                        "d.bin"));
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  REQUIRE(read_file(ws.file("d.bin")).size() == 32);
  auto s = test::run_process("/usr/bin/openssl", {"pkeyutl", "-sign", "-inkey", ws.file("ecdsa-p256.pem"), "-in",
                                                  ws.file("d.bin"), "-out", ws.file("d.sig")});
  REQUIRE_MESSAGE(s.exit_code == 0, s.err);
  auto b = test::run_process("/usr/bin/openssl", {"base64", "-A", "-in", ws.file("d.sig"), "-out", ws.file("d.b64")});
  REQUIRE(b.exit_code == 0);
  r = ws.kiln(sign({"--fix-sig", "d.b64", "--fix-sig-pubkey", "ecdsa-p256.pub.pem"}, "compressible.bin", "f.bin"));
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  auto v = ws.kiln({"image", "verify", "f.bin", "--key", "ecdsa-p256.pub.pem"});
  CHECK_MESSAGE(v.exit_code == 0, v.err);
}
