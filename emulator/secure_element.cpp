// Secure element emulation with OpenSSL: keys stay in the board directory, only public data leaves.
#include "emulator/secure_element.hpp"

#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <string_view>

#include <fmt/format.h>

#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/file_key.hpp"
#include "signing/certificate_builder.hpp"
#include "signing/message_signature.hpp"
#include "signing/openssl_ptr.hpp"
#include "signing/signer.hpp"

namespace kiln::emu {
namespace fs = std::filesystem;
namespace {

[[noreturn]] void fail(const std::string& what) {
  throw Error(ExitCode::failure, "secure element: " + what).with_detail(openssl_errors());
}

ossl::Ptr<EVP_PKEY> read_private_key(const fs::path& path) {
  std::string pem = read_text_file(path);
  ossl::Ptr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  ossl::Ptr<EVP_PKEY> key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) fail("cannot read " + path.string());
  return key;
}

ossl::Ptr<X509> read_certificate_pem(const std::string& pem) {
  ossl::Ptr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  ossl::Ptr<X509> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) fail("bad certificate PEM");
  return cert;
}

// DER of any OpenSSL object with an i2d_* encoder.
template <typename T, typename Encoder>
Bytes to_der(T* object, Encoder encode, const char* what) {
  int len = encode(object, nullptr);
  if (len <= 0) fail(std::string("cannot encode the ") + what);
  Bytes out(static_cast<std::size_t>(len));
  unsigned char* p = out.data();
  encode(object, &p);
  return out;
}

Bytes certificate_der(X509* cert) { return to_der(cert, i2d_X509, "certificate"); }
Bytes spki(EVP_PKEY* key) { return to_der(key, i2d_PUBKEY, "public key"); }


// A certificate for `subject_key`, signed by issuer_key (self-signed when issuer is null).
ossl::Ptr<X509> issue_certificate(EVP_PKEY* subject_key, const std::string& common_name, bool is_ca,
                                  X509* issuer, EVP_PKEY* issuer_key) {
  auto cert = start_certificate(subject_key, "Kiln Emulated Silicon", common_name, issuer, 60L * 60 * 24 * 365 * 30);
  X509* issuer_cert = issuer ? issuer : cert.get();
  add_x509_extension(cert.get(), issuer_cert, NID_basic_constraints, is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
  add_x509_extension(cert.get(), issuer_cert, NID_key_usage, is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
  add_x509_extension(cert.get(), issuer_cert, NID_subject_key_identifier, "hash");
  if (issuer) add_x509_extension(cert.get(), issuer_cert, NID_authority_key_identifier, "keyid:always");
  if (!X509_sign(cert.get(), issuer_key ? issuer_key : subject_key, EVP_sha256())) fail("cannot sign certificate");
  return cert;
}

void write_new_key(const fs::path& path) {
  std::string pem = generate_private_key_pem(KeyType::ecdsa_p256, std::nullopt);
  write_file_atomic(path, as_bytes(pem), 0600);
}

Bytes der_of_private_key(EVP_PKEY* key) { return to_der(key, i2d_PrivateKey, "private key"); }

}  // namespace

std::string VendorRoot::cert_pem() const { return read_text_file(cert_path); }

VendorRoot load_or_create_vendor_root(const fs::path& emu_dir) {
  VendorRoot root{emu_dir / "vendor-root.pem", emu_dir / "vendor-root.key.pem"};
  if (fs::exists(root.cert_path) && fs::exists(root.key_path)) return root;
  fs::create_directories(emu_dir);
  write_new_key(root.key_path);
  auto key = read_private_key(root.key_path);
  auto cert = issue_certificate(key.get(), "Kiln Emulated Silicon Root CA", true, nullptr, nullptr);
  write_file_atomic(root.cert_path, as_bytes(certificate_pem(cert.get())));
  return root;
}

SecureElement::SecureElement(fs::path board_dir, const std::string& uid, const VendorRoot& root)
    : dir_(std::move(board_dir)), uid_(uid) {
  fs::create_directories(dir_);
  if (!fs::exists(dir_ / "silicon.key.pem")) write_new_key(dir_ / "silicon.key.pem");
  if (!fs::exists(dir_ / "transport.key.pem")) write_new_key(dir_ / "transport.key.pem");
  if (!fs::exists(dir_ / "attestation.der")) {
    auto silicon = read_private_key(dir_ / "silicon.key.pem");
    auto root_key = read_private_key(root.key_path);
    auto root_cert = read_certificate_pem(root.cert_pem());
    auto cert = issue_certificate(silicon.get(), uid, false, root_cert.get(), root_key.get());
    write_file_atomic(dir_ / "attestation.der", certificate_der(cert.get()));
    write_file_atomic(dir_ / "vendor-root.der", certificate_der(root_cert.get()));
  }
}

std::vector<Bytes> SecureElement::attestation_chain() const {
  return {read_file(dir_ / "attestation.der"), read_file(dir_ / "vendor-root.der")};
}

Bytes SecureElement::transport_public_key() const { return spki(read_private_key(dir_ / "transport.key.pem").get()); }

Bytes SecureElement::transport_key_signature() const {
  auto signer = load_file_signer(dir_ / "silicon.key.pem", std::nullopt);
  return sign_message(*signer, transport_public_key(), HashAlg::sha256);
}

Bytes SecureElement::attest_identity(ByteView nonce) const {
  auto signer = load_file_signer(dir_ / "silicon.key.pem", std::nullopt);
  Bytes statement = attestation_statement(identity_statement_label, nonce, uid_, transport_public_key());
  return sign_message(*signer, statement, HashAlg::sha256);
}

Bytes SecureElement::attest_device_key(ByteView nonce) const {
  auto signer = load_file_signer(dir_ / "silicon.key.pem", std::nullopt);
  Bytes statement = attestation_statement(key_statement_label, nonce, uid_, device_public_key());
  return sign_message(*signer, statement, HashAlg::sha256);
}

bool SecureElement::has_device_key() const { return fs::exists(dir_ / "device.key.pem"); }

Bytes SecureElement::device_public_key() const {
  if (!has_device_key()) throw Error(ExitCode::failure, "secure element holds no device key");
  return spki(read_private_key(dir_ / "device.key.pem").get());
}

Bytes SecureElement::generate_device_key(const std::string& common_name) {
  write_new_key(dir_ / "device.key.pem");
  auto key = read_private_key(dir_ / "device.key.pem");
  ossl::Ptr<X509_REQ> req(X509_REQ_new());
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  std::string cn = common_name.empty() ? uid_ : common_name;
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  if (!X509_REQ_set_pubkey(req.get(), key.get()) || !X509_REQ_sign(req.get(), key.get(), EVP_sha256()))
    fail("cannot create CSR");
  return to_der(req.get(), i2d_X509_REQ, "CSR");
}

Bytes SecureElement::inject_device_key(const WrappedKey& wrapped) {
  auto transport = read_private_key(dir_ / "transport.key.pem");
  Bytes transport_der = der_of_private_key(transport.get());
  Bytes pkcs8 = unwrap_device_key(wrapped, transport_der, uid_);
  OPENSSL_cleanse(transport_der.data(), transport_der.size());
  const unsigned char* p = pkcs8.data();
  ossl::Ptr<EVP_PKEY> key(d2i_AutoPrivateKey(nullptr, &p, static_cast<long>(pkcs8.size())));
  OPENSSL_cleanse(pkcs8.data(), pkcs8.size());
  // P-256 by its curve: 256 bits alone would let secp256k1 or brainpoolP256r1 through.
  char curve[64] = {};
  std::size_t curve_length = 0;
  if (!key || !EVP_PKEY_is_a(key.get(), "EC") ||
      EVP_PKEY_get_utf8_string_param(key.get(), OSSL_PKEY_PARAM_GROUP_NAME, curve, sizeof curve, &curve_length) != 1 ||
      std::string_view(curve) != "prime256v1")
    throw Error(ExitCode::verification_failed, "injected key is not a P-256 private key");
  ossl::Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PKCS8PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  write_file_atomic(dir_ / "device.key.pem", ByteView(reinterpret_cast<const std::uint8_t*>(data),
                                                      static_cast<std::size_t>(len)), 0600);
  return spki(key.get());
}

Bytes SecureElement::sign_with_device_key(ByteView message) const {
  if (!has_device_key()) throw Error(ExitCode::failure, "secure element holds no device key");
  auto signer = load_file_signer(dir_ / "device.key.pem", std::nullopt);
  return sign_message(*signer, message, HashAlg::sha256);
}

namespace {
constexpr const char* encryption_key_file = "image-encryption.key.pem";

// PEM (PKCS#8, unencrypted: the element's storage is what protects it) of a key MCUboot decrypts with.
void store_encryption_key(const fs::path& path, EVP_PKEY* key) {
  try {
    (void)mcuboot::encryption_key_from_spki(spki(key), "the image-encryption key");
  } catch (const Error& e) {
    throw Error(ExitCode::verification_failed, e.what(), e.hint());
  }
  ossl::Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_PKCS8PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr))
    fail("cannot encode the image-encryption key");
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  write_file_atomic(path, ByteView(reinterpret_cast<const std::uint8_t*>(data), static_cast<std::size_t>(len)), 0600);
}
}  // namespace

bool SecureElement::has_encryption_key() const { return fs::exists(dir_ / encryption_key_file); }

Bytes SecureElement::encryption_public_key() const {
  if (!has_encryption_key()) throw Error(ExitCode::failure, "secure element holds no image-encryption key");
  return spki(read_private_key(dir_ / encryption_key_file).get());
}

Bytes SecureElement::generate_encryption_key(mcuboot::EncryptionKeyKind kind) {
  ossl::Ptr<EVP_PKEY> key;
  switch (kind) {
    case mcuboot::EncryptionKeyKind::ecies_p256: key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")); break;
    case mcuboot::EncryptionKeyKind::ecies_x25519: key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519")); break;
    case mcuboot::EncryptionKeyKind::rsa_oaep_2048:
      key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<std::size_t>(2048)));
      break;
  }
  if (!key) fail("cannot generate an image-encryption key");
  store_encryption_key(dir_ / encryption_key_file, key.get());
  return spki(key.get());
}

Bytes SecureElement::install_encryption_key(ByteView pkcs8_der) {
  const unsigned char* p = pkcs8_der.data();
  ossl::Ptr<EVP_PKEY> key(d2i_AutoPrivateKey(nullptr, &p, static_cast<long>(pkcs8_der.size())));
  if (!key) throw Error(ExitCode::verification_failed, "the image-encryption key is not a private key (PKCS#8 DER)");
  store_encryption_key(dir_ / encryption_key_file, key.get());
  return spki(key.get());
}

Bytes SecureElement::inject_encryption_key(const WrappedKey& wrapped) {
  auto transport = read_private_key(dir_ / "transport.key.pem");
  Bytes transport_der = der_of_private_key(transport.get());
  Bytes pkcs8 = unwrap_device_key(wrapped, transport_der, uid_);
  OPENSSL_cleanse(transport_der.data(), transport_der.size());
  struct Wipe {
    Bytes& b;
    ~Wipe() { OPENSSL_cleanse(b.data(), b.size()); }
  } wipe{pkcs8};
  return install_encryption_key(pkcs8);
}

std::unique_ptr<mcuboot::ContentKeyOpener> SecureElement::encryption_key_opener() const {
  if (!has_encryption_key()) return nullptr;
  return mcuboot::load_content_key_opener_file((dir_ / encryption_key_file).string(),
                                               "the board's image-encryption key");
}

}  // namespace kiln::emu
