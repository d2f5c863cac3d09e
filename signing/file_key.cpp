// PEM private keys: generation (PKCS#8, optional encryption), loading and signing with OpenSSL.
#include "signing/file_key.hpp"

#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <cstring>
#include <fmt/format.h>

#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/key_export.hpp"
#include "signing/openssl_ptr.hpp"

namespace kiln {
namespace {


class FileSigner final : public Signer {
 public:
  FileSigner(ossl::Ptr<EVP_PKEY> key, std::string description)
      : key_(std::move(key)), description_(std::move(description)), public_der_(spki_der(key_.get())) {
    type_ = public_key_type(public_der_);
  }

  // Signs, then checks the signature with the public half: a signature that does not verify
  // (a damaged key, a fault during signing) is never handed out.
  Bytes sign(ByteView input, HashAlg hash) const override {
    Bytes sig = sign_unchecked(input, hash);
    if (!verify_signature(public_der_, input, hash, sig))
      throw Error(ExitCode::failure,
                  fmt::format("the signature made with {} does not verify with its own public key", description_),
                  "nothing was written; check the key file (regenerate it if it is damaged)");
    return sig;
  }
  KeyType type() const override { return type_; }
  Bytes public_key_der() const override { return public_der_; }
  std::string description() const override { return description_; }

  Bytes sign_unchecked(ByteView input, HashAlg hash) const {
    Bytes sig;
    if (type_ == KeyType::ed25519) {
      ossl::Ptr<EVP_MD_CTX> ctx(EVP_MD_CTX_new());
      size_t len = 0;
      if (EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key_.get()) != 1 ||
          EVP_DigestSign(ctx.get(), nullptr, &len, input.data(), input.size()) != 1)
        throw fail();
      sig.resize(len);
      if (EVP_DigestSign(ctx.get(), sig.data(), &len, input.data(), input.size()) != 1) throw fail();
      sig.resize(len);
      return sig;
    }
    if (input.size() != hash_size(hash))
      throw Error(ExitCode::failure,
                  fmt::format("digest is {} bytes, {} needs {}", input.size(), hash_name(hash), hash_size(hash)));
    ossl::Ptr<EVP_PKEY_CTX> ctx(EVP_PKEY_CTX_new(key_.get(), nullptr));
    if (!ctx || EVP_PKEY_sign_init(ctx.get()) != 1 || EVP_PKEY_CTX_set_signature_md(ctx.get(), ossl::md(hash)) != 1)
      throw fail();
    if (is_rsa(type_) && (EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_PSS_PADDING) != 1 ||
                          EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx.get(), static_cast<int>(hash_size(hash))) != 1))
      throw fail();
    size_t len = 0;
    if (EVP_PKEY_sign(ctx.get(), nullptr, &len, input.data(), input.size()) != 1) throw fail();
    sig.resize(len);
    if (EVP_PKEY_sign(ctx.get(), sig.data(), &len, input.data(), input.size()) != 1) throw fail();
    sig.resize(len);
    return sig;
  }

 private:
  Error fail() const {
    return Error(ExitCode::failure, fmt::format("signing with {} failed", description_)).with_detail(openssl_errors());
  }
  ossl::Ptr<EVP_PKEY> key_;
  std::string description_;
  Bytes public_der_;
  KeyType type_;
};

struct PassphraseState {
  const std::optional<std::string>* passphrase;
  bool asked = false;
};

int passphrase_callback(char* buf, int size, int /*rwflag*/, void* u) {
  auto* state = static_cast<PassphraseState*>(u);
  state->asked = true;
  if (!state->passphrase->has_value()) return -1;
  const std::string& pass = **state->passphrase;
  if (static_cast<int>(pass.size()) > size) return -1;
  std::memcpy(buf, pass.data(), pass.size());
  return static_cast<int>(pass.size());
}

ossl::Ptr<EVP_PKEY> read_private_key(const std::filesystem::path& path, const std::optional<std::string>& passphrase,
                                     bool allow_missing) {
  std::string pem = read_text_file(path);
  ossl::Ptr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PassphraseState state{&passphrase};
  ossl::Ptr<EVP_PKEY> key(PEM_read_bio_PrivateKey(bio.get(), nullptr, passphrase_callback, &state));
  OPENSSL_cleanse(pem.data(), pem.size());
  if (key) {
    check_private_key(key.get(), path.string());
    return key;
  }
  std::string detail = openssl_errors();
  if (state.asked && !passphrase)
    throw Error(ExitCode::authentication, fmt::format("{} is encrypted and no passphrase was given", path.string()),
                "pass --passphrase-file FILE or --passphrase-env VAR")
        .with_detail(detail);
  if (state.asked)
    throw Error(ExitCode::authentication, fmt::format("wrong passphrase for {}", path.string()),
                "check the passphrase file or variable")
        .with_detail(detail);
  if (allow_missing) return nullptr;
  throw Error(ExitCode::failure, fmt::format("{} does not hold a private key in PEM form", path.string()),
              "pass a PKCS#8 or traditional PEM private key (kiln key generate makes one)")
      .with_detail(detail);
}

}  // namespace

std::string generate_private_key_pem(KeyType type, const std::optional<std::string>& passphrase) {
  ossl::Ptr<EVP_PKEY> key;
  switch (type) {
    case KeyType::ecdsa_p256: key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")); break;
    case KeyType::ecdsa_p384: key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384")); break;
    case KeyType::ed25519: key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519")); break;
    case KeyType::rsa_2048: key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048})); break;
    case KeyType::rsa_3072: key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{3072})); break;
  }
  if (!key) throw Error(ExitCode::failure, "key generation failed").with_detail(openssl_errors());
  ossl::Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  int ok;
  if (passphrase) {
    ok = PEM_write_bio_PKCS8PrivateKey(bio.get(), key.get(), EVP_aes_256_cbc(), passphrase->data(),
                                       static_cast<int>(passphrase->size()), nullptr, nullptr);
  } else {
    ok = PEM_write_bio_PKCS8PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  }
  if (ok != 1) throw Error(ExitCode::failure, "cannot encode the private key").with_detail(openssl_errors());
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  std::string pem(data, static_cast<std::size_t>(len));
  OPENSSL_cleanse(data, static_cast<std::size_t>(len));
  return pem;
}

std::unique_ptr<Signer> load_file_signer(const std::filesystem::path& path,
                                         const std::optional<std::string>& passphrase) {
  auto key = read_private_key(path, passphrase, false);
  return std::make_unique<FileSigner>(std::move(key), path.filename().string());
}

namespace {

// The DER SubjectPublicKeyInfo in a file, not yet checked.
Bytes read_public_key_file(const std::filesystem::path& path, const std::optional<std::string>& passphrase) {
  std::string pem = read_text_file(path);
  // A DER SubjectPublicKeyInfo (as `kiln key export-public --format der` writes): its bytes as they
  // are, so that load_public_key_file can say why a malformed or invalid key is refused.
  if (pem.find("-----BEGIN") == std::string::npos) return Bytes(pem.begin(), pem.end());
  if (pem.find("PRIVATE KEY-----") != std::string::npos) {
    OPENSSL_cleanse(pem.data(), pem.size());
    return spki_der(read_private_key(path, passphrase, false).get());
  }
  ossl::Ptr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (pem.find("-----BEGIN CERTIFICATE-----") != std::string::npos) {
    ossl::Ptr<X509> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (cert) {
      // X509_get0_pubkey fails for a certificate whose key OpenSSL cannot decode (off the curve).
      if (EVP_PKEY* key = X509_get0_pubkey(cert.get())) return spki_der(key);
      throw Error(ExitCode::verification_failed,
                  fmt::format("{}: the certificate's public key is malformed or not on its curve", path.string()),
                  "the certificate is damaged or crafted; do not trust it")
          .with_detail(openssl_errors());
    }
  } else {
    char* name = nullptr;
    char* header = nullptr;
    unsigned char* data = nullptr;
    long length = 0;
    if (PEM_read_bio(bio.get(), &name, &header, &data, &length) == 1) {
      std::string type(name);
      Bytes der(data, data + length);
      OPENSSL_free(name);
      OPENSSL_free(header);
      OPENSSL_free(data);
      if (type == "PUBLIC KEY") return der;
    }
  }
  throw Error(ExitCode::failure, fmt::format("{} holds no key or certificate kiln can read", path.string()),
              "pass a PEM private key, public key or certificate")
      .with_detail(openssl_errors());
}

}  // namespace

ossl::Ptr<EVP_PKEY> load_private_key_file(const std::filesystem::path& path,
                                          const std::optional<std::string>& passphrase) {
  return read_private_key(path, passphrase, false);
}

Bytes load_any_public_key_file(const std::filesystem::path& path, const std::optional<std::string>& passphrase) {
  return read_public_key_file(path, passphrase);
}

Bytes load_public_key_file(const std::filesystem::path& path, const std::optional<std::string>& passphrase) {
  Bytes spki = read_public_key_file(path, passphrase);
  try {
    check_public_key(spki);
  } catch (const Error& e) {
    throw Error(e.code(), fmt::format("{}: {}", path.string(), e.what()), e.hint()).with_detail(e.detail());
  }
  return spki;
}

}  // namespace kiln
