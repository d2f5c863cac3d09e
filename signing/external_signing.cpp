// Offline signing helpers: sign a vector, accept a signature made elsewhere, record what must be signed.
#include "signing/external_signing.hpp"

#include <openssl/ecdsa.h>

#include <fmt/format.h>

#include "core/base64.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/openssl_ptr.hpp"

namespace kiln {
namespace {

// Whether `signature` is, as a whole, a DER ECDSA-Sig-Value. Its first byte alone cannot tell: one raw
// r||s in 256 starts with 0x30, DER's SEQUENCE tag.
bool is_der_ecdsa(ByteView signature) {
  const unsigned char* p = signature.data();
  ossl::Ptr<ECDSA_SIG> sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(signature.size())));
  bool whole = sig && p == signature.data() + signature.size();
  openssl_errors();  // a failed parse is an answer here, not news
  return whole;
}

class Presigned final : public Signer {
 public:
  Presigned(Bytes public_key_der, Bytes signature, std::string description)
      : public_key_der_(std::move(public_key_der)),
        signature_(std::move(signature)),
        description_(std::move(description)),
        type_(public_key_type(public_key_der_)) {
    // Raw r||s (COSE, PKCS#11 tokens) becomes DER, the form Signer::sign returns.
    std::size_t coordinate = type_ == KeyType::ecdsa_p384 ? 48 : 32;
    if (is_ecdsa(type_) && signature_.size() == 2 * coordinate && !is_der_ecdsa(signature_))
      signature_ = ecdsa_raw_to_der(signature_);
  }
  KeyType type() const override { return type_; }
  Bytes public_key_der() const override { return public_key_der_; }
  std::string description() const override { return description_; }
  Bytes sign(ByteView input, HashAlg hash) const override {
    bool ok = false;
    try {
      ok = verify_signature(public_key_der_, input, hash, signature_);
    } catch (const Error&) {
      ok = false;
    }
    if (!ok)
      throw Error(ExitCode::verification_failed,
                  fmt::format("the signature {} does not verify over what must be signed with the given {} public key",
                              description_, key_type_name(type_)),
                  "nothing was written; sign the vector kiln wrote (--vector-to-sign) with the matching private key");
    return signature_;
  }

 private:
  Bytes public_key_der_;
  Bytes signature_;
  std::string description_;
  KeyType type_;
};

}  // namespace

Bytes sign_vector(const Signer& signer, ByteView vector) {
  if (signer.type() == KeyType::ed25519) return signer.sign(vector, HashAlg::sha512);
  HashAlg hash;
  switch (vector.size()) {
    case 32:
      hash = HashAlg::sha256;
      break;
    case 48:
      hash = HashAlg::sha384;
      break;
    case 64:
      hash = HashAlg::sha512;
      break;
    default:
      throw Error(ExitCode::usage,
                  fmt::format("the input is {} bytes: a {} key signs a SHA-256, SHA-384 or SHA-512 digest "
                              "(32, 48 or 64 bytes)",
                              vector.size(), key_type_name(signer.type())),
                  "write the digest with --vector-to-sign digest");
  }
  return signer.sign(vector, hash);
}

Bytes sign_vector_file(const Signer& signer, const std::filesystem::path& vector, const std::filesystem::path& out,
                       bool base64) {
  Bytes signature = sign_vector(signer, read_file(vector));
  if (base64)
    write_file_atomic(out, as_bytes(to_base64(signature)));
  else
    write_file_atomic(out, signature);
  return signature;
}

std::unique_ptr<Signer> presigned_signer(ByteView public_key_der, ByteView signature, std::string description) {
  return std::make_unique<Presigned>(Bytes(public_key_der.begin(), public_key_der.end()),
                                     Bytes(signature.begin(), signature.end()), std::move(description));
}

VectorRecorder::VectorRecorder(Bytes public_key_der)
    : public_key_der_(std::move(public_key_der)), type_(public_key_type(public_key_der_)) {}

Bytes VectorRecorder::sign(ByteView input, HashAlg hash) const {
  recorded_.assign(input.begin(), input.end());
  hash_ = hash;
  if (is_ecdsa(type_)) return {0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01};  // r = s = 1
  if (type_ == KeyType::ed25519) return Bytes(64, 0);
  return Bytes(type_ == KeyType::rsa_3072 ? 384 : 256, 0);
}

}  // namespace kiln
