// Device-transfer vouchers: the strict parser, the signed bytes and the service's Ed25519 voucher key.
#include "service/transfer_voucher.hpp"

#include <openssl/evp.h>
#include <openssl/pem.h>

#include <filesystem>
#include <set>

#include <fmt/format.h>

#include "core/base64.hpp"
#include "core/device_uid.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "core/time.hpp"
#include "service/secret_file.hpp"
#include "signing/file_key.hpp"
#include "signing/openssl_ptr.hpp"
#include "signing/signer.hpp"

namespace kiln::service {
namespace {

using Json = nlohmann::json;

[[noreturn]] void refuse(const std::string& why) {
  throw Error(ExitCode::verification_failed, "not a valid device-transfer voucher: " + why,
              "use the voucher file exactly as 'kiln device transfer create' wrote it");
}

const Json& member(const Json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end()) refuse(fmt::format("member '{}' is missing", name));
  return *it;
}

std::string text_member(const Json& object, const char* name, std::size_t max) {
  const auto& value = member(object, name);
  if (!value.is_string() || value.get_ref<const std::string&>().empty() ||
      value.get_ref<const std::string&>().size() > max)
    refuse(fmt::format("member '{}' must be a string of 1 to {} bytes", name, max));
  return value.get<std::string>();
}

bool lower_hex(std::string_view text, std::size_t length) {
  return text.size() == length && text.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

std::string timestamp_member(const Json& object, const char* name) {
  auto text = text_member(object, name, 32);
  auto normal = normalize_timestamp(text);
  if (!normal || *normal != text) refuse(fmt::format("member '{}' must be a time as YYYY-MM-DDTHH:MM:SSZ", name));
  return text;
}

Json payload_of(const TransferVoucher& v) {
  return Json{{"version", v.version},     {"id", v.id},           {"from_tenant", v.from_tenant},
              {"to_tenant", v.to_tenant}, {"devices", v.devices}, {"issued_at", v.issued_at},
              {"expires_at", v.expires_at}, {"key_id", v.key_id}};
}

EVP_PKEY* pkey(void* key) { return static_cast<EVP_PKEY*>(key); }

}  // namespace

TransferVoucher parse_transfer_voucher(std::string_view text) {
  if (text.size() > max_voucher_bytes) refuse(fmt::format("larger than {} bytes", max_voucher_bytes));
  auto json = Json::parse(text, nullptr, false);
  if (json.is_discarded()) refuse("not JSON (truncated?)");
  if (!json.is_object()) refuse("not a JSON object");
  static const std::set<std::string> known = {"version",   "id",         "from_tenant", "to_tenant", "devices",
                                              "issued_at", "expires_at", "key_id",      "signature"};
  for (auto& item : json.items())
    if (!known.contains(item.key())) refuse(fmt::format("unknown member '{}'", item.key().substr(0, 40)));
  TransferVoucher v;
  const auto& version = member(json, "version");
  if (!version.is_number_integer() || version.get<std::int64_t>() != transfer_voucher_version)
    refuse(fmt::format("version must be {}", transfer_voucher_version));
  v.id = text_member(json, "id", 64);
  if (!v.id.starts_with("xfer_") || !lower_hex(std::string_view(v.id).substr(5), 32))
    refuse("id must be xfer_ followed by 32 lowercase hex digits");
  v.from_tenant = text_member(json, "from_tenant", 128);
  v.to_tenant = text_member(json, "to_tenant", 128);
  const auto& devices = member(json, "devices");
  if (!devices.is_array() || devices.empty() || devices.size() > max_voucher_devices)
    refuse(fmt::format("devices must be an array of 1 to {} device UIDs", max_voucher_devices));
  std::set<std::string> seen;
  for (const auto& d : devices) {
    if (!d.is_string() || !is_device_uid(d.get_ref<const std::string&>()))
      refuse(fmt::format("devices must hold device UIDs ({})", device_uid_alphabet));
    if (!seen.insert(d.get<std::string>()).second) refuse("device " + d.get<std::string>() + " is named twice");
    v.devices.push_back(d.get<std::string>());
  }
  v.issued_at = timestamp_member(json, "issued_at");
  v.expires_at = timestamp_member(json, "expires_at");
  if (v.expires_at <= v.issued_at) refuse("expires_at must be after issued_at");
  v.key_id = text_member(json, "key_id", 64);
  if (!lower_hex(v.key_id, 64)) refuse("key_id must be 64 lowercase hex digits");
  auto signature = from_base64(text_member(json, "signature", 128));
  if (!signature || signature->size() != 64) refuse("signature must be the base64 of a 64-byte Ed25519 signature");
  v.signature = *signature;
  return v;
}

std::string voucher_signed_bytes(const TransferVoucher& voucher) {
  return "kiln-device-transfer-v1\n" + payload_of(voucher).dump();
}

Json voucher_json(const TransferVoucher& voucher) {
  auto out = payload_of(voucher);
  out["signature"] = to_base64(voucher.signature);
  return out;
}

VoucherKey::VoucherKey(const std::string& pem) : key_(nullptr) {
  ossl::Ptr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  key_ = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr);
  if (!key_ || EVP_PKEY_id(pkey(key_)) != EVP_PKEY_ED25519) {
    EVP_PKEY_free(pkey(key_));
    throw Error(ExitCode::failure, "the voucher key is not an Ed25519 private key in PEM");
  }
}

VoucherKey::~VoucherKey() { EVP_PKEY_free(pkey(key_)); }

std::shared_ptr<const VoucherKey> VoucherKey::ephemeral() {
  return std::make_shared<const VoucherKey>(generate_private_key_pem(KeyType::ed25519, std::nullopt));
}

std::shared_ptr<const VoucherKey> VoucherKey::load_or_create(const std::string& path) {
  auto bytes = load_or_create_secret(path, "the voucher key",
                                     [] {
                                       auto pem = generate_private_key_pem(KeyType::ed25519, std::nullopt);
                                       return Bytes(pem.begin(), pem.end());
                                     });
  return std::make_shared<const VoucherKey>(std::string(bytes.begin(), bytes.end()));
}

Bytes VoucherKey::public_key_der() const {
  int len = i2d_PUBKEY(pkey(key_), nullptr);
  if (len <= 0) throw Error(ExitCode::failure, "the voucher key has no public half");
  Bytes der(static_cast<std::size_t>(len));
  auto* p = der.data();
  i2d_PUBKEY(pkey(key_), &p);
  return der;
}

std::string VoucherKey::key_id() const { return to_hex(digest(HashAlg::sha256, public_key_der())); }

Bytes VoucherKey::sign(std::string_view message) const {
  ossl::Ptr<EVP_MD_CTX> ctx(EVP_MD_CTX_new());
  std::size_t length = 64;
  Bytes signature(length);
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, pkey(key_)) != 1 ||
      EVP_DigestSign(ctx.get(), signature.data(), &length, reinterpret_cast<const unsigned char*>(message.data()),
                     message.size()) != 1)
    throw Error(ExitCode::failure, "signing the voucher failed");
  signature.resize(length);
  return signature;
}

bool voucher_signature_valid(const TransferVoucher& voucher, ByteView public_key_der) {
  if (to_hex(digest(HashAlg::sha256, public_key_der)) != voucher.key_id) return false;
  auto message = voucher_signed_bytes(voucher);
  return verify_signature(public_key_der, as_bytes(message), HashAlg::sha256, voucher.signature);
}

}  // namespace kiln::service
