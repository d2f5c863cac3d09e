// PKCS#11 keys through the module's own C_Sign (dlopen, no OpenSSL engine or provider): open, sign, generate.
#include "signing/pkcs11.hpp"

#include <dlfcn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include <fmt/format.h>
#include <algorithm>
#include <filesystem>
#include <map>
#include <mutex>

#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/key_export.hpp"
#include "signing/openssl_ptr.hpp"
#include "signing/pkcs11_uri.hpp"

// The GNU flavour of p11-kit's header: plain struct names, no macros renaming common words.
#define CRYPTOKI_GNU 1
#include <p11-kit/pkcs11.h>

namespace kiln {
namespace {

constexpr std::string_view module_hint =
    "name the module with --pkcs11-module, KILN_PKCS11_MODULE, the config key "
    "pkcs11-module or module-path= in the URI (SoftHSM2: "
    "/usr/lib/softhsm/libsofthsm2.so)";

// DER encodings of the curve parameters tokens store in CKA_EC_PARAMS.
constexpr std::uint8_t oid_p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
constexpr std::uint8_t oid_p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
constexpr std::uint8_t oid_ed25519[] = {0x06, 0x03, 0x2b, 0x65, 0x70};
// PKCS#11 2.40-era modules (SoftHSM2, OpenSC) name Edwards curves with a PrintableString.
constexpr std::uint8_t printable_edwards25519[] = {0x13, 0x0c, 'e', 'd', 'w', 'a', 'r',
                                                   'd',  's',  '2', '5', '5', '1', '9'};

std::string rv_text(ck_rv_t rv) {
  switch (rv) {
    case CKR_PIN_INCORRECT:
      return "CKR_PIN_INCORRECT";
    case CKR_PIN_LOCKED:
      return "CKR_PIN_LOCKED";
    case CKR_USER_NOT_LOGGED_IN:
      return "CKR_USER_NOT_LOGGED_IN";
    case CKR_KEY_TYPE_INCONSISTENT:
      return "CKR_KEY_TYPE_INCONSISTENT";
    case CKR_MECHANISM_INVALID:
      return "CKR_MECHANISM_INVALID";
    case CKR_KEY_FUNCTION_NOT_PERMITTED:
      return "CKR_KEY_FUNCTION_NOT_PERMITTED";
    case CKR_TEMPLATE_INCONSISTENT:
      return "CKR_TEMPLATE_INCONSISTENT";
    case CKR_ATTRIBUTE_VALUE_INVALID:
      return "CKR_ATTRIBUTE_VALUE_INVALID";
    case CKR_DOMAIN_PARAMS_INVALID:
      return "CKR_DOMAIN_PARAMS_INVALID";
    case CKR_TOKEN_WRITE_PROTECTED:
      return "CKR_TOKEN_WRITE_PROTECTED";
    case CKR_DEVICE_REMOVED:
      return "CKR_DEVICE_REMOVED";
    case CKR_TOKEN_NOT_PRESENT:
      return "CKR_TOKEN_NOT_PRESENT";
    case CKR_GENERAL_ERROR:
      return "CKR_GENERAL_ERROR";
    default:
      return fmt::format("CKR 0x{:08x}", rv);
  }
}

[[noreturn]] void fail(ck_rv_t rv, const std::string& what) {
  throw Error(ExitCode::failure, fmt::format("{} ({})", what, rv_text(rv)));
}

std::string trimmed(const unsigned char* field, std::size_t size) {
  std::string s(reinterpret_cast<const char*>(field), size);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

// One dlopen'ed, initialised module, shared by every key the process opens from it: a second
// C_Initialize would fail, and an early C_Finalize would pull the rug from under other keys.
class Module {
 public:
  static std::shared_ptr<Module> load(const std::string& path) {
    static std::mutex mutex;
    static std::map<std::string, std::weak_ptr<Module>> loaded;
    std::lock_guard lock(mutex);
    if (auto existing = loaded[path].lock()) return existing;
    auto module = std::shared_ptr<Module>(new Module(path));
    loaded[path] = module;
    return module;
  }
  ~Module() {
    if (finalize_) functions_->C_Finalize(nullptr);
    dlclose(handle_);
  }
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  ck_function_list* api() const { return functions_; }
  const std::string& path() const { return path_; }

  // Login state is per token and process, not per session: count the keys that need it.
  bool acquire_login(ck_slot_id_t slot) {
    std::lock_guard lock(login_mutex_);
    return logins_[slot]++ == 0;
  }
  bool release_login(ck_slot_id_t slot) {
    std::lock_guard lock(login_mutex_);
    return --logins_[slot] == 0;
  }

 private:
  explicit Module(const std::string& path) : path_(path) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec))
      throw Error(ExitCode::failure, fmt::format("PKCS#11 module {} does not exist", path), std::string(module_hint));
    // RTLD_NODELETE: the module stays mapped after dlclose, so threads or atexit handlers it left behind
    // (some modules start both) never run unmapped code, and leak reports can name the module.
    handle_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!handle_) {
      const char* why = dlerror();
      throw Error(ExitCode::failure,
                  fmt::format("cannot load PKCS#11 module {}: {}", path, why ? why : "dlopen failed"),
                  std::string(module_hint));
    }
    auto get_function_list = reinterpret_cast<CK_C_GetFunctionList>(dlsym(handle_, "C_GetFunctionList"));
    if (!get_function_list || get_function_list(&functions_) != CKR_OK || !functions_) {
      dlclose(handle_);
      throw Error(ExitCode::failure, fmt::format("{} is not a PKCS#11 module (no usable C_GetFunctionList)", path),
                  std::string(module_hint));
    }
    ck_c_initialize_args args{};
    args.flags = CKF_OS_LOCKING_OK;
    ck_rv_t rv = functions_->C_Initialize(&args);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
      dlclose(handle_);
      fail(rv, fmt::format("PKCS#11 module {} failed to initialise", path));
    }
    finalize_ = rv == CKR_OK;  // someone else in the process initialised it: they finalize it
  }

  std::string path_;
  void* handle_ = nullptr;
  ck_function_list* functions_ = nullptr;
  bool finalize_ = false;
  std::mutex login_mutex_;
  std::map<ck_slot_id_t, int> logins_;
};

class Session {
 public:
  Session(std::shared_ptr<Module> module, ck_slot_id_t slot, bool read_write)
      : module_(std::move(module)), slot_(slot) {
    ck_flags_t flags = CKF_SERIAL_SESSION | (read_write ? CKF_RW_SESSION : 0);
    ck_rv_t rv = module_->api()->C_OpenSession(slot, flags, nullptr, nullptr, &handle_);
    if (rv != CKR_OK) fail(rv, "cannot open a session on the PKCS#11 token");
  }
  ~Session() { module_->api()->C_CloseSession(handle_); }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  ck_function_list* api() const { return module_->api(); }
  ck_session_handle_t handle() const { return handle_; }
  ck_slot_id_t slot() const { return slot_; }
  Module& module() const { return *module_; }

 private:
  std::shared_ptr<Module> module_;
  ck_slot_id_t slot_;
  ck_session_handle_t handle_ = 0;
};

// The user logged in to a token while this object lives (shared with other keys on the same token).
class Login {
 public:
  Login(Session& session, const std::string& pin, const std::string& token_name) : session_(session) {
    if (!session.module().acquire_login(session.slot())) return;
    ck_rv_t rv = session.api()->C_Login(session.handle(), CKU_USER,
                                        reinterpret_cast<unsigned char*>(const_cast<char*>(pin.data())), pin.size());
    if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) return;
    session.module().release_login(session.slot());
    if (rv == CKR_PIN_INCORRECT)
      throw Error(ExitCode::authentication, fmt::format("wrong PIN for token {}", token_name),
                  "check pin-source / pin-value in the URI or KILN_PKCS11_PIN; tokens lock after a few wrong tries");
    if (rv == CKR_PIN_LOCKED)
      throw Error(ExitCode::authentication, fmt::format("the user PIN of token {} is locked", token_name),
                  "unlock it with the SO PIN (softhsm2-util / pkcs11-tool --init-pin --login --login-type so)");
    if (rv == CKR_PIN_EXPIRED)
      throw Error(ExitCode::authentication, fmt::format("the user PIN of token {} has expired", token_name),
                  "set a new PIN with pkcs11-tool --change-pin");
    fail(rv, fmt::format("cannot log in to token {}", token_name));
  }
  ~Login() {
    if (session_.module().release_login(session_.slot())) session_.api()->C_Logout(session_.handle());
  }
  Login(const Login&) = delete;
  Login& operator=(const Login&) = delete;

 private:
  Session& session_;
};

std::string token_name(const Pkcs11Uri& uri) {
  return uri.token_description();
}

ck_slot_id_t find_slot(Module& module, const Pkcs11Uri& uri) {
  auto* api = module.api();
  unsigned long count = 0;
  ck_rv_t rv = api->C_GetSlotList(true, nullptr, &count);
  if (rv != CKR_OK) fail(rv, fmt::format("cannot list the tokens of {}", module.path()));
  std::vector<ck_slot_id_t> slots(count);
  rv = api->C_GetSlotList(true, slots.data(), &count);
  if (rv != CKR_OK) fail(rv, fmt::format("cannot list the tokens of {}", module.path()));
  slots.resize(count);

  std::vector<ck_slot_id_t> matches;
  std::vector<std::string> labels;
  for (ck_slot_id_t slot : slots) {
    ck_token_info info{};
    if (api->C_GetTokenInfo(slot, &info) != CKR_OK || !(info.flags & CKF_TOKEN_INITIALIZED)) continue;
    std::string label = trimmed(info.label, sizeof info.label);
    labels.push_back("'" + label + "'");
    bool match =
        (!uri.token || *uri.token == label) &&
        (!uri.manufacturer || *uri.manufacturer == trimmed(info.manufacturer_id, sizeof info.manufacturer_id)) &&
        (!uri.serial || *uri.serial == trimmed(info.serial_number, sizeof info.serial_number)) &&
        (!uri.model || *uri.model == trimmed(info.model, sizeof info.model)) && (!uri.slot_id || *uri.slot_id == slot);
    if (match) matches.push_back(slot);
  }
  if (matches.empty())
    throw Error(ExitCode::not_found, fmt::format("no PKCS#11 token {} in module {}", token_name(uri), module.path()),
                labels.empty() ? std::string("the module has no initialised token (softhsm2-util --init-token)")
                               : fmt::format("tokens present: {}", fmt::join(labels, ", ")));
  if (matches.size() > 1)
    throw Error(ExitCode::usage, fmt::format("{} tokens match {}", matches.size(), uri.description()),
                fmt::format("name one with token= or serial= (tokens present: {})", fmt::join(labels, ", ")));
  return matches.front();
}

std::optional<Bytes> read_attribute(Session& session, ck_object_handle_t object, ck_attribute_type_t type) {
  ck_attribute attribute{type, nullptr, 0};
  if (session.api()->C_GetAttributeValue(session.handle(), object, &attribute, 1) != CKR_OK) return std::nullopt;
  if (attribute.value_len == static_cast<unsigned long>(-1)) return std::nullopt;
  Bytes out(attribute.value_len);
  attribute.value = out.data();
  if (session.api()->C_GetAttributeValue(session.handle(), object, &attribute, 1) != CKR_OK) return std::nullopt;
  out.resize(attribute.value_len);
  return out;
}

unsigned long read_ulong_attribute(Session& session, ck_object_handle_t object, ck_attribute_type_t type) {
  unsigned long number = 0;
  ck_attribute attribute{type, &number, sizeof number};
  ck_rv_t rv = session.api()->C_GetAttributeValue(session.handle(), object, &attribute, 1);
  if (rv != CKR_OK) fail(rv, "cannot read a key attribute from the token");
  return number;
}

// Objects of `object_class` named by the URI's object= and id= (all of that class when neither is given).
std::vector<ck_object_handle_t> find_objects(Session& session, ck_object_class_t object_class,
                                             const std::optional<std::string>& label, const std::optional<Bytes>& id) {
  std::vector<ck_attribute> query{{CKA_CLASS, &object_class, sizeof object_class}};
  std::string label_copy = label.value_or("");
  Bytes id_copy = id.value_or(Bytes{});
  if (label) query.push_back({CKA_LABEL, label_copy.data(), label_copy.size()});
  if (id) query.push_back({CKA_ID, id_copy.data(), id_copy.size()});
  auto* api = session.api();
  ck_rv_t rv = api->C_FindObjectsInit(session.handle(), query.data(), query.size());
  if (rv != CKR_OK) fail(rv, "cannot search the PKCS#11 token");
  std::vector<ck_object_handle_t> found;
  ck_object_handle_t batch[16];
  unsigned long count = 0;
  while ((rv = api->C_FindObjects(session.handle(), batch, 16, &count)) == CKR_OK && count > 0)
    found.insert(found.end(), batch, batch + count);
  api->C_FindObjectsFinal(session.handle());
  if (rv != CKR_OK) fail(rv, "cannot search the PKCS#11 token");
  return found;
}

bool equals(ByteView a, ByteView b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end());
}

// CKA_EC_POINT is an OCTET STRING holding the point (PKCS#11) but some modules return the bare point.
Bytes unwrap_ec_point(ByteView point, std::size_t raw_size) {
  if (point.size() == raw_size && (raw_size == 32 || point[0] == 0x04)) return Bytes(point.begin(), point.end());
  if (point.size() >= 2 && point[0] == 0x04) {
    std::size_t header = 2, length = point[1];
    if (point[1] == 0x81 && point.size() >= 3) {
      header = 3;
      length = point[2];
    }
    if (length == raw_size && header + length == point.size())
      return Bytes(point.begin() + static_cast<std::ptrdiff_t>(header), point.end());
  }
  throw Error(ExitCode::failure,
              fmt::format("the token returned an EC point of {} bytes kiln cannot read", point.size()));
}

Bytes spki_from_params(const char* algorithm, OSSL_PARAM_BLD* builder) {
  ossl::Ptr<OSSL_PARAM> params(OSSL_PARAM_BLD_to_param(builder));
  ossl::Ptr<EVP_PKEY_CTX> context(EVP_PKEY_CTX_new_from_name(nullptr, algorithm, nullptr));
  EVP_PKEY* key = nullptr;
  if (!params || !context || EVP_PKEY_fromdata_init(context.get()) != 1 ||
      EVP_PKEY_fromdata(context.get(), &key, EVP_PKEY_PUBLIC_KEY, params.get()) != 1)
    throw Error(ExitCode::failure, "the token's public key is not valid").with_detail(openssl_errors());
  ossl::Ptr<EVP_PKEY> owned(key);
  return spki_der(owned.get());
}

Bytes ec_spki(const char* group, ByteView point) {
  ossl::Ptr<OSSL_PARAM_BLD> builder(OSSL_PARAM_BLD_new());
  OSSL_PARAM_BLD_push_utf8_string(builder.get(), OSSL_PKEY_PARAM_GROUP_NAME, group, 0);
  OSSL_PARAM_BLD_push_octet_string(builder.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size());
  return spki_from_params("EC", builder.get());
}

KeyType ec_key_type(ByteView params) {
  if (equals(params, oid_p256)) return KeyType::ecdsa_p256;
  if (equals(params, oid_p384)) return KeyType::ecdsa_p384;
  throw Error(ExitCode::failure,
              fmt::format("the token key uses an EC curve kiln does not support (params {})", to_hex(params)),
              "use ecdsa-p256 or ecdsa-p384 keys");
}

// DER SubjectPublicKeyInfo built from a key object's public attributes (public key objects, and RSA
// private keys, which carry modulus and exponent).
std::optional<Bytes> spki_from_attributes(Session& session, ck_object_handle_t object) {
  unsigned long key_type = read_ulong_attribute(session, object, CKA_KEY_TYPE);
  if (key_type == CKK_RSA) {
    auto modulus = read_attribute(session, object, CKA_MODULUS);
    auto exponent = read_attribute(session, object, CKA_PUBLIC_EXPONENT);
    if (!modulus || !exponent) return std::nullopt;
    ossl::Ptr<BIGNUM> n(BN_bin2bn(modulus->data(), static_cast<int>(modulus->size()), nullptr));
    ossl::Ptr<BIGNUM> e(BN_bin2bn(exponent->data(), static_cast<int>(exponent->size()), nullptr));
    ossl::Ptr<OSSL_PARAM_BLD> builder(OSSL_PARAM_BLD_new());
    OSSL_PARAM_BLD_push_BN(builder.get(), OSSL_PKEY_PARAM_RSA_N, n.get());
    OSSL_PARAM_BLD_push_BN(builder.get(), OSSL_PKEY_PARAM_RSA_E, e.get());
    return spki_from_params("RSA", builder.get());
  }
  auto params = read_attribute(session, object, CKA_EC_PARAMS);
  auto point = read_attribute(session, object, CKA_EC_POINT);
  if (key_type == CKK_EC_EDWARDS) {
    if (!params || !(equals(*params, oid_ed25519) || equals(*params, printable_edwards25519)))
      throw Error(ExitCode::failure, "the token key is an Edwards curve other than Ed25519", "use ed25519 keys");
    if (!point) return std::nullopt;
    Bytes raw = unwrap_ec_point(*point, 32);
    ossl::Ptr<EVP_PKEY> key(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, raw.data(), raw.size()));
    return spki_der(key.get());
  }
  if (key_type == CKK_EC) {
    if (!params) return std::nullopt;
    KeyType type = ec_key_type(*params);
    if (!point) return std::nullopt;
    bool p256 = type == KeyType::ecdsa_p256;
    return ec_spki(p256 ? "P-256" : "P-384", unwrap_ec_point(*point, p256 ? 65 : 97));
  }
  throw Error(ExitCode::failure,
              fmt::format("the token key has a key type kiln does not support (CKK 0x{:x})", key_type),
              "use ecdsa-p256, ecdsa-p384, ed25519, rsa-2048 or rsa-3072 keys");
}

std::optional<Bytes> spki_from_certificate(Session& session, ck_object_handle_t certificate) {
  auto der = read_attribute(session, certificate, CKA_VALUE);
  if (!der) return std::nullopt;
  const unsigned char* p = der->data();
  ossl::Ptr<X509> cert(d2i_X509(nullptr, &p, static_cast<long>(der->size())));
  if (!cert) return std::nullopt;
  return spki_der(X509_get0_pubkey(cert.get()));
}

// Everything one key operation needs, released in reverse order: login, session, module.
struct TokenSession {
  Pkcs11Uri uri;
  std::shared_ptr<Module> module;
  std::unique_ptr<Session> session;
  std::unique_ptr<Login> login;
};

std::optional<std::string> resolve_pin(const Pkcs11Uri& uri, const KeyOptions& options) {
  if (uri.pin_value) return uri.pin_value;
  if (uri.pin_source) {
    std::string pin = read_text_file(*uri.pin_source);
    while (!pin.empty() && (pin.back() == '\n' || pin.back() == '\r')) pin.pop_back();
    return pin;
  }
  return options.pkcs11_pin;
}

enum class LoginNeed { required, if_pin_given };

TokenSession open_token(const std::string& text, const KeyOptions& options, bool read_write, LoginNeed need) {
  TokenSession token;
  token.uri = parse_pkcs11_uri(text);
  std::string module_path = token.uri.module_path.value_or(options.pkcs11_module.value_or(""));
  if (module_path.empty())
    throw Error(ExitCode::failure, fmt::format("no PKCS#11 module to open {}", token.uri.description()),
                std::string(module_hint));
  token.module = Module::load(module_path);
  ck_slot_id_t slot = find_slot(*token.module, token.uri);
  token.session = std::make_unique<Session>(token.module, slot, read_write);

  ck_token_info info{};
  token.module->api()->C_GetTokenInfo(slot, &info);
  bool login_required = (info.flags & CKF_LOGIN_REQUIRED) != 0;
  auto pin = resolve_pin(token.uri, options);
  if (!pin && login_required && need == LoginNeed::required)
    throw Error(ExitCode::authentication, fmt::format("token {} needs a PIN", token_name(token.uri)),
                "add pin-source=FILE to the URI or set KILN_PKCS11_PIN");
  if (pin && login_required) token.login = std::make_unique<Login>(*token.session, *pin, token_name(token.uri));
  // The key lives on with the session; the PIN need not.
  for (auto* secret : {&pin, &token.uri.pin_value})
    if (*secret) OPENSSL_cleanse((*secret)->data(), (*secret)->size());
  token.uri.pin_value.reset();
  return token;
}

// The one object of `object_class` the URI names; nullopt if none. Several are an error: kiln
// never guesses which key to sign with.
std::optional<ck_object_handle_t> only_object(TokenSession& token, ck_object_class_t object_class,
                                              std::string_view what) {
  auto found = find_objects(*token.session, object_class, token.uri.object, token.uri.id);
  if (found.empty()) return std::nullopt;
  if (found.size() > 1)
    throw Error(ExitCode::usage,
                fmt::format("{} {}s match {} on token {}", found.size(), what, token.uri.object_description(),
                            token_name(token.uri)),
                "name one with object= and id=");
  return found.front();
}

ck_object_handle_t find_private_key(TokenSession& token) {
  if (token.uri.type && *token.uri.type != "private")
    throw Error(ExitCode::usage,
                fmt::format("{} names a {} object, not a private key", token.uri.description(), *token.uri.type),
                "use type=private or leave type out");
  auto key = only_object(token, CKO_PRIVATE_KEY, "private key");
  if (!key)
    throw Error(ExitCode::not_found,
                fmt::format("no private key {} on token {}", token.uri.object_description(), token_name(token.uri)),
                "list the keys with pkcs11-tool --list-objects --login, or create one with kiln key generate --pkcs11");
  return *key;
}

// The public half of a private key object: from the matching public key object or certificate
// (same CKA_ID, else same label), or from the private key's own public attributes.
Bytes public_key_of(TokenSession& token, ck_object_handle_t private_key) {
  Session& session = *token.session;
  auto id = read_attribute(session, private_key, CKA_ID);
  auto label_bytes = read_attribute(session, private_key, CKA_LABEL);
  std::optional<std::string> label;
  if (label_bytes) label = std::string(label_bytes->begin(), label_bytes->end());
  if (id && id->empty()) id.reset();
  for (auto& public_key : find_objects(session, CKO_PUBLIC_KEY, id ? std::nullopt : label, id))
    if (auto spki = spki_from_attributes(session, public_key)) return *spki;
  for (auto& certificate : find_objects(session, CKO_CERTIFICATE, id ? std::nullopt : label, id))
    if (auto spki = spki_from_certificate(session, certificate)) return *spki;
  if (auto info = read_attribute(session, private_key, CKA_PUBLIC_KEY_INFO); info && !info->empty()) return *info;
  if (auto spki = spki_from_attributes(session, private_key)) return *spki;
  throw Error(ExitCode::not_found,
              fmt::format("the token holds no public key for private key {}", token.uri.object_description()),
              "store the public key or certificate on the token with the same id");
}

class Pkcs11Signer final : public Signer {
 public:
  Pkcs11Signer(TokenSession token, ck_object_handle_t key, Bytes public_der)
      : token_(std::move(token)),
        key_(key),
        public_der_(std::move(public_der)),
        type_(public_key_type(public_der_)),
        description_(token_.uri.description()) {}

  KeyType type() const override { return type_; }
  Bytes public_key_der() const override { return public_der_; }
  std::string description() const override { return description_; }

  Bytes sign(ByteView input, HashAlg hash) const override {
    if (type_ != KeyType::ed25519 && input.size() != hash_size(hash))
      throw Error(ExitCode::failure,
                  fmt::format("digest is {} bytes, {} needs {}", input.size(), hash_name(hash), hash_size(hash)));
    ck_rsa_pkcs_pss_params pss{};
    ck_mechanism mechanism{CKM_ECDSA, nullptr, 0};
    if (type_ == KeyType::ed25519) {
      mechanism.mechanism = CKM_EDDSA;
    } else if (is_rsa(type_)) {
      pss.hash_alg = hash == HashAlg::sha256 ? CKM_SHA256 : hash == HashAlg::sha384 ? CKM_SHA384 : CKM_SHA512;
      pss.mgf = hash == HashAlg::sha256 ? CKG_MGF1_SHA256 : hash == HashAlg::sha384 ? CKG_MGF1_SHA384 : CKG_MGF1_SHA512;
      pss.s_len = hash_size(hash);
      mechanism = {CKM_RSA_PKCS_PSS, &pss, sizeof pss};
    }
    std::lock_guard lock(mutex_);  // a PKCS#11 session runs one operation at a time
    auto* api = token_.session->api();
    auto session = token_.session->handle();
    ck_rv_t rv = api->C_SignInit(session, &mechanism, key_);
    if (rv != CKR_OK) fail(rv, fmt::format("the token refused to start signing with {}", description_));
    Bytes signature(1024);
    unsigned long length = signature.size();
    rv = api->C_Sign(session, const_cast<unsigned char*>(input.data()), input.size(), signature.data(), &length);
    if (rv != CKR_OK) fail(rv, fmt::format("signing with {} failed", description_));
    signature.resize(length);
    if (is_ecdsa(type_)) return ecdsa_raw_to_der(signature);
    return signature;
  }

 private:
  TokenSession token_;
  ck_object_handle_t key_;
  Bytes public_der_;
  KeyType type_;
  std::string description_;
  mutable std::mutex mutex_;
};

class Pkcs11Decryption final : public Pkcs11DecryptionKey {
 public:
  Pkcs11Decryption(TokenSession token, ck_object_handle_t key, Bytes public_der)
      : token_(std::move(token)), key_(key), public_der_(std::move(public_der)), description_(token_.uri.description()) {}

  Bytes public_key_der() const override { return public_der_; }
  std::string description() const override { return description_; }

  Bytes derive(ByteView peer_public, std::size_t secret_size) const override {
    Bytes peer(peer_public.begin(), peer_public.end());
    ck_ecdh1_derive_params params{CKD_NULL, 0, nullptr, peer.size(), peer.data()};
    ck_mechanism mechanism{CKM_ECDH1_DERIVE, &params, sizeof params};
    ck_object_class_t secret_class = CKO_SECRET_KEY;
    ck_key_type_t secret_type = CKK_GENERIC_SECRET;
    unsigned long length = secret_size;
    unsigned char yes = 1, no = 0;
    ck_attribute attributes[] = {{CKA_CLASS, &secret_class, sizeof secret_class},
                                 {CKA_KEY_TYPE, &secret_type, sizeof secret_type},
                                 {CKA_VALUE_LEN, &length, sizeof length},
                                 {CKA_TOKEN, &no, sizeof no},
                                 {CKA_SENSITIVE, &no, sizeof no},
                                 {CKA_EXTRACTABLE, &yes, sizeof yes}};
    std::lock_guard lock(mutex_);
    auto* api = token_.session->api();
    auto session = token_.session->handle();
    ck_object_handle_t secret = 0;
    ck_rv_t rv = api->C_DeriveKey(session, &mechanism, key_, attributes, std::size(attributes), &secret);
    if (rv == CKR_KEY_FUNCTION_NOT_PERMITTED)
      throw Error(ExitCode::usage, fmt::format("{} does not permit key agreement (its CKA_DERIVE is false)", description_),
                  "create or import the image-encryption key with derive usage (pkcs11-tool --usage-derive)");
    if (rv != CKR_OK)
      throw Error(ExitCode::verification_failed,
                  fmt::format("the key agreement with {} failed ({})", description_, rv_text(rv)),
                  "the image's ephemeral key is not on the key's curve, or the token cannot derive with this key");
    auto value = read_attribute(*token_.session, secret, CKA_VALUE);
    api->C_DestroyObject(session, secret);
    if (!value || value->size() != secret_size)
      throw Error(ExitCode::failure, fmt::format("the token did not give the shared secret of {}", description_));
    return std::move(*value);
  }

  std::optional<Bytes> decrypt_rsa_oaep_sha256(ByteView ciphertext) const override {
    ck_rsa_pkcs_oaep_params params{CKM_SHA256, CKG_MGF1_SHA256, CKZ_DATA_SPECIFIED, nullptr, 0};
    ck_mechanism mechanism{CKM_RSA_PKCS_OAEP, &params, sizeof params};
    std::lock_guard lock(mutex_);
    auto* api = token_.session->api();
    auto session = token_.session->handle();
    ck_rv_t rv = api->C_DecryptInit(session, &mechanism, key_);
    if (rv == CKR_KEY_FUNCTION_NOT_PERMITTED)
      throw Error(ExitCode::usage, fmt::format("{} does not permit decryption (its CKA_DECRYPT is false)", description_),
                  "create or import the image-encryption key with decrypt usage");
    if (rv == CKR_ARGUMENTS_BAD || rv == CKR_MECHANISM_PARAM_INVALID || rv == CKR_MECHANISM_INVALID)
      throw Error(ExitCode::usage,
                  fmt::format("the token of {} does not decrypt RSA-OAEP with SHA-256 and MGF1-SHA256, MCUboot's padding "
                              "({})",
                              description_, rv_text(rv)),
                  "use a token that supports it (SoftHSM2 2.6 supports OAEP with SHA-1 only), or an ECIES key");
    if (rv != CKR_OK) fail(rv, fmt::format("the token refused to decrypt with {}", description_));
    Bytes input(ciphertext.begin(), ciphertext.end());
    Bytes out(512);
    unsigned long length = out.size();
    rv = api->C_Decrypt(session, input.data(), input.size(), out.data(), &length);
    if (rv != CKR_OK) return std::nullopt;
    out.resize(length);
    return out;
  }

 private:
  TokenSession token_;
  ck_object_handle_t key_;
  Bytes public_der_;
  std::string description_;
  mutable std::mutex mutex_;
};

Bytes ec_params_for(KeyType type) {
  switch (type) {
    case KeyType::ecdsa_p256:
      return Bytes(std::begin(oid_p256), std::end(oid_p256));
    case KeyType::ecdsa_p384:
      return Bytes(std::begin(oid_p384), std::end(oid_p384));
    default:
      return Bytes(std::begin(oid_ed25519), std::end(oid_ed25519));
  }
}

}  // namespace

std::unique_ptr<Signer> open_pkcs11_signer(const std::string& uri, const KeyOptions& options) {
  auto token = open_token(uri, options, false, LoginNeed::required);
  ck_object_handle_t key = find_private_key(token);
  Bytes public_der = public_key_of(token, key);
  return std::make_unique<Pkcs11Signer>(std::move(token), key, std::move(public_der));
}

std::unique_ptr<Pkcs11DecryptionKey> open_pkcs11_decryption_key(const std::string& uri, const KeyOptions& options) {
  auto token = open_token(uri, options, false, LoginNeed::required);
  ck_object_handle_t key = find_private_key(token);
  Bytes public_der = public_key_of(token, key);
  return std::make_unique<Pkcs11Decryption>(std::move(token), key, std::move(public_der));
}

Bytes load_pkcs11_public_key(const std::string& uri, const KeyOptions& options) {
  auto token = open_token(uri, options, false, LoginNeed::if_pin_given);
  const auto& wanted = token.uri.type;
  if (!wanted || *wanted == "public")
    if (auto public_key = only_object(token, CKO_PUBLIC_KEY, "public key"))
      if (auto spki = spki_from_attributes(*token.session, *public_key)) return *spki;
  if (!wanted || *wanted == "cert")
    if (auto certificate = only_object(token, CKO_CERTIFICATE, "certificate"))
      if (auto spki = spki_from_certificate(*token.session, *certificate)) return *spki;
  if (!wanted || *wanted == "private")
    if (auto private_key = only_object(token, CKO_PRIVATE_KEY, "private key"))
      return public_key_of(token, *private_key);
  throw Error(ExitCode::not_found,
              fmt::format("no key {} on token {}", token.uri.object_description(), token_name(token.uri)),
              token.login ? "list the objects with pkcs11-tool --list-objects --login"
                          : "private objects are only visible after login: add pin-source= or set KILN_PKCS11_PIN");
}

Bytes generate_pkcs11_key(const std::string& uri_text, KeyType type, const KeyOptions& options) {
  auto token = open_token(uri_text, options, true, LoginNeed::required);
  const Pkcs11Uri& uri = token.uri;
  if (!uri.object && !uri.id)
    throw Error(ExitCode::usage, fmt::format("{} does not name the new key", uri.description()),
                "add object=LABEL (and id=%NN) to the URI");
  if (uri.type && *uri.type != "private" && *uri.type != "public")
    throw Error(ExitCode::usage, fmt::format("cannot generate a key pair as type={}", *uri.type), "leave type out");

  // Refuse to shadow anything already named like the new key: signing would become ambiguous.
  for (ck_object_class_t object_class : {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_CERTIFICATE, CKO_SECRET_KEY, CKO_DATA}) {
    bool taken = (uri.object && !find_objects(*token.session, object_class, uri.object, std::nullopt).empty()) ||
                 (uri.id && !find_objects(*token.session, object_class, std::nullopt, uri.id).empty());
    if (taken)
      throw Error(ExitCode::conflict,
                  fmt::format("token {} already holds an object named {}", token_name(uri), uri.object_description()),
                  "choose another object=/id=, or delete the old key (pkcs11-tool --delete-object); kiln never "
                  "replaces token keys");
  }

  bool yes = true, no = false;
  std::string label = uri.object.value_or("");
  Bytes id = uri.id.value_or(Bytes{});
  Bytes ec_params = ec_params_for(type);
  unsigned long modulus_bits = type == KeyType::rsa_3072 ? 3072 : 2048;
  std::uint8_t public_exponent[] = {0x01, 0x00, 0x01};

  std::vector<ck_attribute> public_template{
      {CKA_TOKEN, &yes, sizeof yes}, {CKA_PRIVATE, &no, sizeof no}, {CKA_VERIFY, &yes, sizeof yes}};
  std::vector<ck_attribute> private_template{{CKA_TOKEN, &yes, sizeof yes},
                                             {CKA_PRIVATE, &yes, sizeof yes},
                                             {CKA_SENSITIVE, &yes, sizeof yes},
                                             {CKA_EXTRACTABLE, &no, sizeof no},
                                             {CKA_SIGN, &yes, sizeof yes}};
  for (auto* key_template : {&public_template, &private_template}) {
    if (uri.object) key_template->push_back({CKA_LABEL, label.data(), label.size()});
    if (uri.id) key_template->push_back({CKA_ID, id.data(), id.size()});
  }
  ck_mechanism mechanism{CKM_EC_KEY_PAIR_GEN, nullptr, 0};
  if (is_rsa(type)) {
    mechanism.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
    public_template.push_back({CKA_MODULUS_BITS, &modulus_bits, sizeof modulus_bits});
    public_template.push_back({CKA_PUBLIC_EXPONENT, public_exponent, sizeof public_exponent});
  } else {
    if (type == KeyType::ed25519) mechanism.mechanism = CKM_EC_EDWARDS_KEY_PAIR_GEN;
    public_template.push_back({CKA_EC_PARAMS, ec_params.data(), ec_params.size()});
  }

  auto* api = token.session->api();
  ck_object_handle_t public_key = 0, private_key = 0;
  ck_rv_t rv =
      api->C_GenerateKeyPair(token.session->handle(), &mechanism, public_template.data(), public_template.size(),
                             private_template.data(), private_template.size(), &public_key, &private_key);
  if ((rv == CKR_ATTRIBUTE_VALUE_INVALID || rv == CKR_DOMAIN_PARAMS_INVALID || rv == CKR_CURVE_NOT_SUPPORTED) &&
      type == KeyType::ed25519) {
    // PKCS#11 2.40-era modules may only know the curve by its name.
    ec_params.assign(std::begin(printable_edwards25519), std::end(printable_edwards25519));
    public_template.back() = {CKA_EC_PARAMS, ec_params.data(), ec_params.size()};
    rv = api->C_GenerateKeyPair(token.session->handle(), &mechanism, public_template.data(), public_template.size(),
                                private_template.data(), private_template.size(), &public_key, &private_key);
  }
  if (rv == CKR_MECHANISM_INVALID)
    throw Error(ExitCode::failure,
                fmt::format("token {} cannot generate {} keys", token_name(uri), key_type_name(type)),
                "choose another --type or another token");
  if (rv != CKR_OK)
    fail(rv, fmt::format("generating a {} key on token {} failed", key_type_name(type), token_name(uri)));
  auto spki = spki_from_attributes(*token.session, public_key);
  if (!spki) throw Error(ExitCode::failure, "the token created the key but does not show its public half");
  return *spki;
}

}  // namespace kiln
