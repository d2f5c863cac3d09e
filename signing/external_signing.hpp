// Signing split across hosts: what an offline signer must sign, its signature brought back and checked.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "signing/signer.hpp"

namespace kiln {

// `kiln key sign-digest`: signs a vector written by `--vector-to-sign` with `signer`. ECDSA and RSA take a
// digest (SHA-256/384/512 by its length: 32/48/64 bytes) and give DER ECDSA / RSA-PSS, as MCUboot and
// `openssl pkeyutl -sign` do; Ed25519 signs the bytes themselves (a digest, or a --pure payload).
// Throws Error(usage) for a digest of a length no hash has.
Bytes sign_vector(const Signer& signer, ByteView vector);
// sign_vector over the file `vector`, the signature written to `out` (temp + rename), as base64 (imgtool's
// --fix-sig format) or binary. Returns the signature.
Bytes sign_vector_file(const Signer& signer, const std::filesystem::path& vector, const std::filesystem::path& out,
                       bool base64);

// A Signer whose signature was made elsewhere: sign() returns `signature` after checking that it verifies
// over the input with `public_key_der` (Error(verification_failed) otherwise). ECDSA signatures may be DER
// or raw r||s.
std::unique_ptr<Signer> presigned_signer(ByteView public_key_der, ByteView signature, std::string description);

// A Signer that records the input it is asked to sign (the vector an offline signer needs) and returns a
// well-formed placeholder signature.
class VectorRecorder final : public Signer {
 public:
  explicit VectorRecorder(Bytes public_key_der);
  KeyType type() const override { return type_; }
  Bytes public_key_der() const override { return public_key_der_; }
  std::string description() const override { return "the offline signer"; }
  Bytes sign(ByteView input, HashAlg hash) const override;
  const Bytes& recorded() const { return recorded_; }
  HashAlg recorded_hash() const { return hash_; }

 private:
  Bytes public_key_der_;
  KeyType type_;
  mutable Bytes recorded_;
  mutable HashAlg hash_ = HashAlg::sha256;
};

}  // namespace kiln
