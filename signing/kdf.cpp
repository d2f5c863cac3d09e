// HKDF through EVP_PKEY_HKDF.
#include "signing/kdf.hpp"

#include <openssl/kdf.h>

#include "core/error.hpp"
#include "signing/openssl_ptr.hpp"

namespace kiln {

Bytes hkdf(const EVP_MD* digest, ByteView secret, ByteView info, std::size_t length) {
  ossl::Ptr<EVP_PKEY_CTX> ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr));
  Bytes out(length);
  std::size_t out_size = out.size();
  bool ok = ctx && EVP_PKEY_derive_init(ctx.get()) == 1 && EVP_PKEY_CTX_set_hkdf_md(ctx.get(), digest) == 1 &&
            EVP_PKEY_CTX_set1_hkdf_key(ctx.get(), secret.data(), static_cast<int>(secret.size())) == 1 &&
            EVP_PKEY_CTX_add1_hkdf_info(ctx.get(), info.data(), static_cast<int>(info.size())) == 1 &&
            EVP_PKEY_derive(ctx.get(), out.data(), &out_size) == 1 && out_size == length;
  if (!ok) throw Error(ExitCode::failure, "HKDF key derivation failed").with_detail(openssl_errors());
  return out;
}

}  // namespace kiln
