// Tests for signing/pkcs11 against a real SoftHSM2 token in a temporary directory (SOFTHSM2_CONF): keys opened by
// pkcs11: URI sign and the OpenSSL command line verifies, public keys are read without a PIN, key agreement runs on
// the token and matches OpenSSL's, and every failure (wrong PIN, missing object, token or module) is a clear Error
// with its exit code that never shows the PIN.
#include <doctest/doctest.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdlib.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/key_ref.hpp"
#include "signing/mcuboot_sign.hpp"
#include "signing/openssl_ptr.hpp"
#include "signing/pkcs11.hpp"
#include "signing/signer.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/vectors.hpp"

using namespace kiln;
namespace fs = std::filesystem;

namespace {

const std::string softhsm_module = "/usr/lib/softhsm/libsofthsm2.so";
const std::string user_pin = "1234";

// A SoftHSM2 token "T" (user PIN 1234) in a temporary directory, seen by this process and the setup tools.
struct Token {
  test::TempDir dir;
  std::string conf = dir.file("softhsm2.conf");

  Token() {
    REQUIRE_MESSAGE(fs::exists(softhsm_module), "SoftHSM2 is not installed at ", softhsm_module);
    fs::create_directory(dir.path() / "tokens");
    write_file_atomic(conf, as_bytes("directories.tokendir = " + dir.file("tokens") +
                                     "\nobjectstore.backend = file\nlog.level = ERROR\n"));
    ::setenv("SOFTHSM2_CONF", conf.c_str(), 1);  // read by the module when kiln initialises it in this process
    tool("softhsm2-util", {"--init-token", "--free", "--label", "T", "--pin", user_pin, "--so-pin", "5678"});
  }

  test::ProcessResult tool(const std::string& program, const std::vector<std::string>& args) const {
    test::ProcessOptions options;
    options.env["SOFTHSM2_CONF"] = conf;
    auto result = test::run_process("/usr/bin/" + program, args, options);
    INFO(program << " stderr: " << result.err);
    REQUIRE(result.exit_code == 0);
    return result;
  }
  void keypair(const std::string& key_type, const std::string& id, const std::string& label,
               const std::vector<std::string>& extra = {}) const {
    std::vector<std::string> args{"--module",   softhsm_module, "--login", "--pin", user_pin,  "--keypairgen",
                                  "--key-type", key_type,       "--id",    id,      "--label", label};
    args.insert(args.end(), extra.begin(), extra.end());
    tool("pkcs11-tool", args);
  }
  // The token's public key as pkcs11-tool exports it, as PEM (for the openssl command line).
  std::string public_pem(const std::string& id) const {
    std::string der = dir.file("pub-" + id + ".der"), pem = dir.file("pub-" + id + ".pem");
    tool("pkcs11-tool", {"--module", softhsm_module, "--read-object", "--type", "pubkey", "--id", id, "-o", der});
    tool("openssl", {"pkey", "-pubin", "-inform", "DER", "-in", der, "-out", pem});
    return pem;
  }

  static KeyOptions options(std::optional<std::string> pin = user_pin) {
    KeyOptions o;
    o.pkcs11_module = softhsm_module;
    o.pkcs11_pin = std::move(pin);
    return o;
  }
};

// The Error a call throws (code, and message + hint + detail, where a PIN must never appear).
struct Failure {
  bool thrown = false;
  ExitCode code = ExitCode::ok;
  std::string message;
  std::string everything;
};
Failure failure_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& e) {
    return {true, e.code(), e.what(), std::string(e.what()) + "\n" + e.hint() + "\n" + e.detail()};
  }
  return {};
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// `openssl pkeyutl -verify` over `input` (a digest) with the public key PEM; extra -pkeyopt settings for RSA-PSS.
bool openssl_verifies(const Token& token, const std::string& pem, const Bytes& input, const Bytes& signature,
                      const std::vector<std::string>& pkeyopts = {}) {
  std::string in = token.dir.file("input.bin"), sig = token.dir.file("sig.bin");
  write_file_atomic(in, input);
  write_file_atomic(sig, signature);
  std::vector<std::string> args{"pkeyutl", "-verify", "-pubin", "-inkey", pem, "-in", in, "-sigfile", sig};
  for (const auto& opt : pkeyopts) {
    args.push_back("-pkeyopt");
    args.push_back(opt);
  }
  auto r = test::run_process("/usr/bin/openssl", args);
  INFO("openssl: " << r.out << r.err);
  return r.exit_code == 0 && contains(r.out, "Signature Verified Successfully");
}

// A DER public key as a PEM file for the openssl command line.
std::string pem_of(const Token& token, const Bytes& der, const std::string& name) {
  std::string der_path = token.dir.file(name + ".pub.der"), pem = token.dir.file(name + ".pub.pem");
  write_file_atomic(der_path, der);
  token.tool("openssl", {"pkey", "-pubin", "-inform", "DER", "-in", der_path, "-out", pem});
  return pem;
}

}  // namespace

TEST_CASE("pkcs11: an EC P-256 key opened by URI signs digests the openssl command line verifies") {
  Token token;
  token.keypair("EC:prime256v1", "01", "ec");
  std::string pem = token.public_pem("01");
  const std::vector<std::string> uris = {
      "pkcs11:token=T;object=ec", "pkcs11:token=T;id=%01", "pkcs11:object=ec;type=private",
      "pkcs11:token=T;object=ec?module-path=" + softhsm_module + "&pin-value=" + user_pin};
  for (const std::string& uri : uris) {
    CAPTURE(uri);
    bool in_uri = contains(uri, "module-path");
    auto signer = open_pkcs11_signer(uri, in_uri ? KeyOptions{} : Token::options());
    CHECK(signer->type() == KeyType::ecdsa_p256);
    CHECK(!contains(signer->description(), user_pin));
    CHECK(signer->description().starts_with("pkcs11:"));
    Bytes d = digest(HashAlg::sha256, as_bytes("kiln " + uri));
    Bytes sig = signer->sign(d, HashAlg::sha256);
    CHECK(sig[0] == 0x30);  // DER ECDSA-Sig-Value, as the Signer interface promises (the token gives r||s)
    CHECK(openssl_verifies(token, pem, d, sig));
    Bytes other = d;
    other[0] ^= 1;
    CHECK(!openssl_verifies(token, pem, other, sig));
    CHECK(verify_signature(signer->public_key_der(), d, HashAlg::sha256, sig));
  }
  // The public key kiln reads is the one pkcs11-tool exports.
  auto signer = open_pkcs11_signer("pkcs11:token=T;object=ec", Token::options());
  std::string der = token.dir.file("spki.der");
  token.tool("openssl", {"pkey", "-pubin", "-in", pem, "-outform", "DER", "-out", der});
  CHECK(signer->public_key_der() == read_file(der));
}

TEST_CASE("pkcs11: P-384, RSA-2048 (PSS) and Ed25519 keys generated by kiln sign what OpenSSL verifies") {
  Token token;
  Bytes p384_public = generate_pkcs11_key("pkcs11:token=T;object=p384;id=%02", KeyType::ecdsa_p384, Token::options());
  Bytes rsa_public = generate_pkcs11_key("pkcs11:token=T;object=rsa;id=%03", KeyType::rsa_2048, Token::options());
  Bytes ed_public = generate_pkcs11_key("pkcs11:token=T;object=ed;id=%04", KeyType::ed25519, Token::options());

  auto p384 = open_pkcs11_signer("pkcs11:token=T;object=p384", Token::options());
  CHECK(p384->type() == KeyType::ecdsa_p384);
  CHECK(p384->public_key_der() == p384_public);
  Bytes d384 = digest(HashAlg::sha384, as_bytes("kiln"));
  CHECK(openssl_verifies(token, pem_of(token, p384_public, "p384"), d384, p384->sign(d384, HashAlg::sha384)));

  auto rsa = open_pkcs11_signer("pkcs11:token=T;object=rsa", Token::options());
  CHECK(rsa->type() == KeyType::rsa_2048);
  CHECK(rsa->public_key_der() == rsa_public);
  std::string rsa_pem = pem_of(token, rsa_public, "rsa");
  for (HashAlg hash : {HashAlg::sha256, HashAlg::sha384}) {
    Bytes d = digest(hash, as_bytes("kiln"));
    Bytes sig = rsa->sign(d, hash);
    CHECK(sig.size() == 256);
    std::string bits = hash == HashAlg::sha256 ? "sha256" : "sha384";
    // RSA-PSS with the salt as long as the digest and MGF1 with the same hash, as MCUboot verifies.
    CHECK(openssl_verifies(token, rsa_pem, d, sig,
                           {"rsa_padding_mode:pss", "rsa_pss_saltlen:" + std::to_string(d.size()), "digest:" + bits,
                            "rsa_mgf1_md:" + bits}));
    CHECK(!openssl_verifies(token, rsa_pem, d, sig,
                            {"rsa_padding_mode:pss", "rsa_pss_saltlen:" + std::to_string(d.size() + 1),
                             "digest:" + bits, "rsa_mgf1_md:" + bits}));
  }

  auto ed = open_pkcs11_signer("pkcs11:token=T;object=ed", Token::options());
  CHECK(ed->type() == KeyType::ed25519);
  CHECK(ed->public_key_der() == ed_public);
  const std::string text = "any length message, signed whole";
  Bytes message(text.begin(), text.end());
  Bytes ed_sig = ed->sign(message, HashAlg::sha256);
  CHECK(ed_sig.size() == 64);
  // Ed25519 is verified over the message itself (openssl pkeyutl -rawin).
  std::string pem = token.dir.file("ed.pem");
  write_file_atomic(token.dir.file("ed.der"), ed_public);
  token.tool("openssl", {"pkey", "-pubin", "-inform", "DER", "-in", token.dir.file("ed.der"), "-out", pem});
  write_file_atomic(token.dir.file("msg.bin"), message);
  write_file_atomic(token.dir.file("ed.sig"), ed_sig);
  auto r = test::run_process("/usr/bin/openssl", {"pkeyutl", "-verify", "-pubin", "-inkey", pem, "-rawin", "-in",
                                                  token.dir.file("msg.bin"), "-sigfile", token.dir.file("ed.sig")});
  CHECK_MESSAGE(r.exit_code == 0, r.err);

  // A digest of the wrong length for the hash is refused before the token sees it.
  Failure f = failure_of([&] { p384->sign(Bytes(32, 1), HashAlg::sha384); });
  CHECK(f.code == ExitCode::failure);
  CHECK(contains(f.message, "digest is 32 bytes"));
}

TEST_CASE("pkcs11: a token key signs an MCUboot image that verifies with its public key") {
  Token token;
  token.keypair("EC:prime256v1", "01", "fw");
  auto signer = open_pkcs11_signer("pkcs11:token=T;object=fw", Token::options());
  mcuboot::SignOptions o;
  o.version = mcuboot::parse_version("1.0.0");
  o.header_size = 0x200;
  o.slot_size = 0x40000;
  o.pad_header = true;
  std::string out = token.dir.file("signed.bin");
  mcuboot::sign_image(test::vector("mcuboot/app.bin"), out, o, signer.get());
  auto report = mcuboot::verify_image(out, load_public_key("pkcs11:token=T;object=fw", Token::options()));
  CHECK(report.signature_ok == std::optional<bool>(true));
}

TEST_CASE("pkcs11: public keys are read without a PIN, from the public object, a certificate or the private key") {
  Token token;
  token.keypair("EC:prime256v1", "01", "ec");
  Bytes expected = open_pkcs11_signer("pkcs11:token=T;object=ec", Token::options())->public_key_der();
  CHECK(load_pkcs11_public_key("pkcs11:token=T;object=ec", Token::options(std::nullopt)) == expected);
  CHECK(load_pkcs11_public_key("pkcs11:token=T;id=%01;type=public", Token::options(std::nullopt)) == expected);
  CHECK(load_pkcs11_public_key("pkcs11:token=T;object=ec;type=private", Token::options()) == expected);
  // type=private without a PIN: the private object is invisible, and the hint says why.
  Failure hidden =
      failure_of([] { load_pkcs11_public_key("pkcs11:token=T;object=ec;type=private", Token::options(std::nullopt)); });
  CHECK(hidden.code == ExitCode::not_found);
  CHECK(contains(hidden.everything, "only visible after login"));

  // A certificate object: its key (any key: here a file key's certificate).
  token.tool("openssl", {"req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                         "-keyout", token.dir.file("c.key"), "-subj", "/CN=c", "-days", "1", "-outform", "DER", "-out",
                         token.dir.file("c.der")});
  token.tool("pkcs11-tool", {"--module", softhsm_module, "--login", "--pin", user_pin, "--write-object",
                             token.dir.file("c.der"), "--type", "cert", "--id", "09", "--label", "cert"});
  token.tool("openssl", {"pkey", "-in", token.dir.file("c.key"), "-pubout", "-outform", "DER", "-out",
                         token.dir.file("c.pub.der")});
  CHECK(load_pkcs11_public_key("pkcs11:token=T;object=cert;type=cert", Token::options(std::nullopt)) ==
        read_file(token.dir.file("c.pub.der")));
}

TEST_CASE("pkcs11: key agreement on the token (ECIES-P256 image keys) gives OpenSSL's shared secret") {
  Token token;
  token.keypair("EC:prime256v1", "05", "enc", {"--usage-derive"});
  auto key = open_pkcs11_decryption_key("pkcs11:token=T;object=enc", Token::options());
  CHECK(!contains(key->description(), user_pin));

  // An ephemeral peer key, as an encrypted image carries one.
  ossl::Ptr<EVP_PKEY> peer(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  REQUIRE(peer);
  Bytes peer_point(65);
  std::size_t point_size = 0;
  REQUIRE(EVP_PKEY_get_octet_string_param(peer.get(), OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, peer_point.data(),
                                          peer_point.size(), &point_size) == 1);
  REQUIRE(point_size == 65);
  Bytes on_token = key->derive(peer_point, 32);

  Bytes token_public = key->public_key_der();
  const unsigned char* p = token_public.data();
  ossl::Ptr<EVP_PKEY> token_key(d2i_PUBKEY(nullptr, &p, static_cast<long>(token_public.size())));
  REQUIRE(token_key);
  ossl::Ptr<EVP_PKEY_CTX> ctx(EVP_PKEY_CTX_new(peer.get(), nullptr));
  REQUIRE(EVP_PKEY_derive_init(ctx.get()) == 1);
  REQUIRE(EVP_PKEY_derive_set_peer(ctx.get(), token_key.get()) == 1);
  Bytes expected(32);
  std::size_t expected_size = expected.size();
  REQUIRE(EVP_PKEY_derive(ctx.get(), expected.data(), &expected_size) == 1);
  CHECK(on_token == expected);

  // A point not on the curve: the token refuses, as verification_failed.
  Bytes bad = peer_point;
  bad[64] ^= 1;
  CHECK(failure_of([&] { key->derive(bad, 32); }).code == ExitCode::verification_failed);

  // A key without CKA_DERIVE: a usage error naming it.
  generate_pkcs11_key("pkcs11:token=T;object=sign-only;id=%06", KeyType::ecdsa_p256, Token::options());
  auto sign_only = open_pkcs11_decryption_key("pkcs11:token=T;object=sign-only", Token::options());
  Failure f = failure_of([&] { sign_only->derive(peer_point, 32); });
  CHECK(f.code == ExitCode::usage);
  CHECK(contains(f.message, "CKA_DERIVE"));
}

TEST_CASE("pkcs11: a wrong or missing PIN is an authentication error that never shows the PIN") {
  Token token;
  token.keypair("EC:prime256v1", "01", "ec");
  const std::string wrong = "808177";

  Failure by_option = failure_of([&] { open_pkcs11_signer("pkcs11:token=T;object=ec", Token::options(wrong)); });
  CHECK(by_option.code == ExitCode::authentication);
  CHECK(by_option.message == "wrong PIN for token 'T'");
  CHECK(!contains(by_option.everything, wrong));

  Failure in_uri = failure_of(
      [&] { open_pkcs11_signer("pkcs11:token=T;object=ec?pin-value=" + wrong, Token::options(std::nullopt)); });
  CHECK(in_uri.code == ExitCode::authentication);
  CHECK(!contains(in_uri.everything, wrong));

  std::string pin_file = token.dir.file("pin.txt");
  write_file_atomic(pin_file, as_bytes(wrong + "\n"));
  Failure from_file = failure_of(
      [&] { open_pkcs11_signer("pkcs11:token=T;object=ec?pin-source=" + pin_file, Token::options(std::nullopt)); });
  CHECK(from_file.code == ExitCode::authentication);
  CHECK(!contains(from_file.everything, wrong));

  // A PIN the token's length rules refuse is a wrong PIN too (not an opaque module failure).
  for (const std::string& odd : std::vector<std::string>{"12", std::string(300, '7')}) {
    CAPTURE(odd.size());
    Failure f = failure_of([&] { open_pkcs11_signer("pkcs11:token=T;object=ec", Token::options(odd)); });
    CHECK(f.code == ExitCode::authentication);
    CHECK(contains(f.message, "wrong PIN"));
    CHECK(!contains(f.everything, odd));
  }

  Failure none = failure_of([&] { open_pkcs11_signer("pkcs11:token=T;object=ec", Token::options(std::nullopt)); });
  CHECK(none.code == ExitCode::authentication);
  CHECK(none.message == "token 'T' needs a PIN");

  // Failures after a successful login (object missing) never show the PIN either, wherever it came from.
  Failure missing = failure_of(
      [&] { open_pkcs11_signer("pkcs11:token=T;object=nokey?pin-value=" + user_pin, Token::options(std::nullopt)); });
  CHECK(missing.code == ExitCode::not_found);
  CHECK(!contains(missing.everything, "pin-value"));

  // The right PIN still works after the wrong ones (SoftHSM2 has no lockout by default).
  CHECK(open_pkcs11_signer("pkcs11:token=T;object=ec", Token::options())->type() == KeyType::ecdsa_p256);
}

TEST_CASE("pkcs11: missing object, token or module, and ambiguous names are clear errors") {
  Token token;
  token.keypair("EC:prime256v1", "01", "ec");

  Failure object = failure_of([] { open_pkcs11_signer("pkcs11:token=T;object=nokey", Token::options()); });
  CHECK(object.code == ExitCode::not_found);
  CHECK(object.message == "no private key 'nokey' on token 'T'");

  Failure public_only = failure_of([] { load_pkcs11_public_key("pkcs11:token=T;object=nokey", Token::options()); });
  CHECK(public_only.code == ExitCode::not_found);
  CHECK(contains(public_only.message, "no key 'nokey' on token 'T'"));

  Failure no_token = failure_of([] { open_pkcs11_signer("pkcs11:token=Nope;object=ec", Token::options()); });
  CHECK(no_token.code == ExitCode::not_found);
  CHECK(contains(no_token.message, "no PKCS#11 token 'Nope'"));
  CHECK(contains(no_token.everything, "tokens present: 'T'"));

  Failure wrong_type = failure_of([] { open_pkcs11_signer("pkcs11:token=T;object=ec;type=public", Token::options()); });
  CHECK(wrong_type.code == ExitCode::usage);
  CHECK(contains(wrong_type.message, "not a private key"));

  KeyOptions no_module;
  no_module.pkcs11_pin = user_pin;
  Failure unnamed = failure_of([&] { open_pkcs11_signer("pkcs11:token=T;object=ec", no_module); });
  CHECK(unnamed.code == ExitCode::failure);
  CHECK(contains(unnamed.message, "no PKCS#11 module"));
  CHECK(contains(unnamed.everything, "KILN_PKCS11_MODULE"));

  KeyOptions missing_module = Token::options();
  missing_module.pkcs11_module = token.dir.file("libmissing.so");
  Failure missing = failure_of([&] { open_pkcs11_signer("pkcs11:token=T;object=ec", missing_module); });
  CHECK(missing.code == ExitCode::failure);
  CHECK(contains(missing.message, "libmissing.so does not exist"));

  write_file_atomic(token.dir.file("junk.so"), as_bytes("not an ELF file"));
  KeyOptions junk_module = Token::options();
  junk_module.pkcs11_module = token.dir.file("junk.so");
  Failure junk = failure_of([&] { open_pkcs11_signer("pkcs11:token=T;object=ec", junk_module); });
  CHECK(junk.code == ExitCode::failure);
  CHECK(contains(junk.message, "cannot load PKCS#11 module"));

  // Two private keys answer to one label: kiln never guesses.
  token.keypair("EC:prime256v1", "02", "ec");
  Failure ambiguous = failure_of([] { open_pkcs11_signer("pkcs11:token=T;object=ec", Token::options()); });
  CHECK(ambiguous.code == ExitCode::usage);
  CHECK(contains(ambiguous.message, "2 private keys match 'ec'"));
  CHECK(open_pkcs11_signer("pkcs11:token=T;object=ec;id=%02", Token::options())->type() == KeyType::ecdsa_p256);

  // Generating over an existing name is a conflict; a key without a name a usage error.
  Failure taken =
      failure_of([] { generate_pkcs11_key("pkcs11:token=T;id=%01", KeyType::ecdsa_p256, Token::options()); });
  CHECK(taken.code == ExitCode::conflict);
  Failure nameless = failure_of([] { generate_pkcs11_key("pkcs11:token=T", KeyType::ecdsa_p256, Token::options()); });
  CHECK(nameless.code == ExitCode::usage);
  CHECK(contains(nameless.message, "does not name the new key"));
}
