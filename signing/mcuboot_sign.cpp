// Streaming MCUboot sign and verify over files: hash while copying, sign the digest, never keep the image.
#include "signing/mcuboot_sign.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cbor.h>
#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include "core/base64.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "core/interrupt.hpp"
#include "signing/intel_hex.hpp"
#include "signing/key_info.hpp"

namespace kiln::mcuboot {
namespace {

constexpr std::size_t chunk_size = 1 << 20;
constexpr std::size_t max_boot_record_sw_type = 12;
constexpr std::uint64_t writeback_interval = 32u << 20;
constexpr std::uint16_t tlv_sig_pure = 0x25;

// The input image: a binary file streamed in chunks, or a HEX file held in memory (as imgtool).
class ImageInput {
 public:
  // `max_span`: the slot size (a HEX input that spans more cannot fit, whatever its gaps).
  ImageInput(const std::filesystem::path& path, std::uint64_t max_span) {
    if (is_intel_hex_path(path.string())) {
      hex_ = parse_intel_hex(read_text_file(path), max_span, fmt::format("--slot-size {:#x}", max_span));
      base_address_ = hex_->base_address;
    } else {
      reader_.emplace(path, chunk_size);
    }
  }
  std::uint64_t size() const { return hex_ ? hex_->data.size() : reader_->size(); }
  std::optional<std::uint32_t> base_address() const { return base_address_; }
  ByteView next() {
    if (reader_) return reader_->next();
    std::size_t n = std::min(chunk_size, hex_->data.size() - hex_offset_);
    ByteView chunk(hex_->data.data() + hex_offset_, n);
    hex_offset_ += n;
    return chunk;
  }

 private:
  std::optional<ChunkReader> reader_;
  std::optional<HexImage> hex_;
  std::size_t hex_offset_ = 0;
  std::optional<std::uint32_t> base_address_;
};

// The output image: straight to an atomic file for binary, collected for HEX (written at the end).
class ImageOutput {
 public:
  explicit ImageOutput(const std::filesystem::path& path) : path_(path), hex_(is_intel_hex_path(path.string())) {
    if (!hex_) file_.emplace(path);
  }
  void write(ByteView bytes) {
    if (file_) {
      file_->write(bytes);
      // Large images: let the disk catch up while we hash, instead of all at once in fsync.
      if ((written_ + bytes.size()) / writeback_interval != written_ / writeback_interval) file_->start_writeback();
    } else {
      memory_.insert(memory_.end(), bytes.begin(), bytes.end());
    }
    written_ += bytes.size();
  }
  std::uint64_t written() const { return written_; }
  bool hex() const { return hex_; }
  // HEX: the image at `base`, and the trailer (if any) at the end of the slot.
  void commit_hex(std::uint32_t base, ByteView trailer, std::uint64_t slot_size) {
    std::vector<HexSegment> segments = {{base, memory_}};
    if (!trailer.empty()) segments.push_back({static_cast<std::uint32_t>(base + slot_size - trailer.size()), trailer});
    write_file_atomic(path_, as_bytes(format_intel_hex(segments)));
  }
  void reserve(std::uint64_t size) {
    if (file_) file_->reserve(size);
  }
  void commit() {
    if (file_) file_->commit();
  }

 private:
  std::filesystem::path path_;
  bool hex_;
  std::optional<AtomicFile> file_;
  Bytes memory_;
  std::uint64_t written_ = 0;
};

// Writes one chunk on a second thread while the caller hashes the same chunk: hashing and copying
// into the page cache each take about as long as the other, so overlapping them is what brings
// signing close to the speed of hashing alone. Both sides only read the chunk.
class OverlappedWriter {
 public:
  explicit OverlappedWriter(ImageOutput& output) : output_(output), thread_([this] { run(); }) {}
  ~OverlappedWriter() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  OverlappedWriter(const OverlappedWriter&) = delete;
  OverlappedWriter& operator=(const OverlappedWriter&) = delete;

  void start(ByteView chunk) {
    {
      std::lock_guard lock(mutex_);
      job_ = chunk;
      pending_ = true;
    }
    wake_.notify_all();
  }
  // Waits for the chunk given to start(); rethrows the writer's error, if any.
  void wait() {
    std::unique_lock lock(mutex_);
    done_.wait(lock, [this] { return !pending_; });
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    while (true) {
      wake_.wait(lock, [this] { return pending_ || stop_; });
      if (!pending_) return;
      ByteView job = job_;
      lock.unlock();
      std::exception_ptr error;
      try {
        output_.write(job);
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      error_ = error;
      pending_ = false;
      done_.notify_all();
    }
  }

  ImageOutput& output_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  ByteView job_;
  bool pending_ = false;
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

// A lower bound on the signature TLV value, to refuse an image too big for its slot before
// reading gigabytes; the exact check runs once the signature exists.
std::size_t min_signature_size(KeyType type) {
  switch (type) {
    case KeyType::ed25519:
      return 64;
    case KeyType::rsa_2048:
      return 256;
    case KeyType::rsa_3072:
      return 384;
    default:
      return 8;
  }
}

Bytes encode_boot_record(const std::string& sw_type, const ImageVersion& version, HashAlg hash, ByteView key_hash) {
  if (sw_type.size() > max_boot_record_sw_type)
    throw Error(ExitCode::usage,
                fmt::format("'{}' is too long ({} characters) for --boot-record", sw_type, sw_type.size()),
                "use at most 12 characters");
  // imgtool's CBOR map, in its key order: type, version, signer id, measurement description and,
  // last because the bootloader overwrites it in place, the measurement value (zeros here).
  std::string version_text = fmt::format("{}.{}.{}", version.major, version.minor, version.revision);
  std::string description = fmt::format("SHA{}", hash_size(hash) * 8);
  Bytes zeros(hash_size(hash), 0);
  struct CborFree {
    void operator()(cbor_item_t* item) const { cbor_decref(&item); }
  };
  using CborPtr = std::unique_ptr<cbor_item_t, CborFree>;
  CborPtr map(cbor_new_definite_map(5));
  auto add = [&](std::uint8_t key, cbor_item_t* value) {
    CborPtr k(cbor_build_uint8(key));
    CborPtr v(value);
    if (!cbor_map_add(map.get(), {k.get(), v.get()})) throw std::bad_alloc();
  };
  add(1, cbor_build_stringn(sw_type.data(), sw_type.size()));
  add(4, cbor_build_stringn(version_text.data(), version_text.size()));
  add(5, cbor_build_bytestring(key_hash.data(), key_hash.size()));
  add(6, cbor_build_stringn(description.data(), description.size()));
  add(2, cbor_build_bytestring(zeros.data(), zeros.size()));
  unsigned char* buffer = nullptr;
  std::size_t buffer_size = 0;
  std::size_t length = cbor_serialize_alloc(map.get(), &buffer, &buffer_size);
  Bytes out(buffer, buffer + length);
  std::free(buffer);
  return out;
}

std::vector<Tlv> protected_tlvs(const SignOptions& options, HashAlg hash, ByteView key_hash,
                                const std::vector<Tlv>& compression) {
  std::vector<Tlv> tlvs;
  if (options.security_counter) {
    Bytes value;
    put_le32(value, *options.security_counter);
    tlvs.push_back({tlv::security_counter, value});
  }
  if (options.boot_record_sw_type)
    tlvs.push_back(
        {tlv::boot_record, encode_boot_record(*options.boot_record_sw_type, options.version, hash, key_hash)});
  for (const auto& d : options.dependencies) tlvs.push_back({tlv::dependency, encode_dependency(d)});
  tlvs.insert(tlvs.end(), compression.begin(), compression.end());
  if (options.vendor_id) {
    // Python's uuid.NAMESPACE_DNS.
    static const Bytes dns_namespace = from_hex("6ba7b8109dad11d180b400c04fd430c8");
    Bytes vid = uuid_from_text_or_name(*options.vendor_id, dns_namespace);
    tlvs.push_back({tlv::uuid_vid, vid});
    if (options.class_id) tlvs.push_back({tlv::uuid_cid, uuid_from_text_or_name(*options.class_id, vid)});
  }
  for (const auto& custom : options.custom_tlvs) tlvs.push_back(custom);
  return tlvs;
}

std::uint32_t header_flags(const SignOptions& options) {
  std::uint32_t flags = 0;
  if (options.non_bootable) flags |= flag_non_bootable;
  if (options.load_addr != 0) flags |= flag_ram_load;
  if (options.rom_fixed) flags |= flag_rom_fixed;
  return flags;
}

std::string hash_label(HashAlg hash) {
  return fmt::format("SHA-{}", hash_size(hash) * 8);
}

}  // namespace

Bytes uuid_from_text_or_name(std::string_view text, ByteView name_space) {
  std::string hex;
  for (char c : text)
    if (c != '-') hex.push_back(c);
  bool looks_like_uuid =
      hex.size() == 32 && std::all_of(hex.begin(), hex.end(), [](unsigned char c) { return std::isxdigit(c) != 0; });
  if (looks_like_uuid) return from_hex(hex);
  return uuid5(name_space, text);
}

void validate(const SignOptions& o) {
  auto usage = [](std::string message, std::string hint = {}) {
    return Error(ExitCode::usage, std::move(message), std::move(hint));
  };
  if (o.header_size < header_struct_size)
    throw usage(fmt::format("--header-size {:#x} is smaller than the 32-byte image header", o.header_size),
                "use at least 0x20 (0x200 is usual)");
  static constexpr std::size_t aligns[] = {1, 2, 4, 8, 16, 32};
  if (std::find(std::begin(aligns), std::end(aligns), o.trailer.align) == std::end(aligns))
    throw usage(fmt::format("--align {} is not one of 1, 2, 4, 8, 16, 32", o.trailer.align));
  if (o.trailer.max_align != 8 && o.trailer.max_align != 16 && o.trailer.max_align != 32)
    throw usage(fmt::format("--max-align {} is not one of 8, 16, 32", o.trailer.max_align));
  if (o.trailer.align > o.trailer.max_align)
    throw usage(fmt::format("--align {} is larger than --max-align {}", o.trailer.align, o.trailer.max_align),
                "raise --max-align to at least --align");
  if (o.slot_size == 0) throw usage("--slot-size must be greater than zero");
  if (o.rom_fixed && o.load_addr != 0) throw usage("can not set --rom-fixed and --load-addr at the same time");
  if (o.class_id && !o.vendor_id) throw usage("--cid needs --vid", "give the vendor identifier as well");
  if (o.encryption && o.encryption->key_bits != 128 && o.encryption->key_bits != 256)
    throw usage(fmt::format("--encrypt-keylen {} is not 128 or 256", o.encryption->key_bits));
  if (o.encryption && o.encryption->hmac == HmacSha::sha512 && o.encryption->key.kind != EncryptionKeyKind::ecies_x25519)
    throw usage("--hmac-sha 512 works only with an ECIES-X25519 encryption key",
                "use --hmac-sha auto (SHA-256) for P-256 and RSA keys");
  if (o.save_enctlv && !o.encryption) throw usage("--save-enctlv needs --encrypt");
  if (o.vector_to_sign && o.fixed_signature)
    throw usage("--vector-to-sign and --fix-sig are two steps of external signing, not one",
                "first write the vector with --vector-to-sign, then assemble with --fix-sig");
  if (o.compression != Compression::none) {
    if (!o.pad_header)
      throw usage("--compression needs --pad-header (imgtool: the compressed payload cannot hold the header's zeros)");
    if (o.vector_to_sign || o.fixed_signature)
      throw usage("--compression cannot be combined with external signing (--vector-to-sign, --fix-sig)",
                  "a compressed image carries a second signature over the decompressed image; sign with --key");
    if (o.pure) throw usage("--compression cannot be combined with --pure");
  }
  for (const auto& custom : o.custom_tlvs) {
    if (custom.type < tlv::vendor_min || custom.type > tlv::vendor_max)
      throw usage(fmt::format("invalid custom TLV type value {:#06x}, allowed values are between 0x00a0 and 0xfffe",
                              custom.type));
    if (is_known_tlv_type(custom.type))
      throw usage(fmt::format("custom TLV {:#x} conflicts with predefined TLV", custom.type));
    if (std::count_if(o.custom_tlvs.begin(), o.custom_tlvs.end(), [&](const Tlv& t) { return t.type == custom.type; }) >
        1)
      throw usage(fmt::format("custom TLV {:#x} already exists", custom.type));
  }
}

namespace {

std::uint64_t round_up16(std::uint64_t n) {
  return (n + 15) / 16 * 16;
}

std::uint32_t encryption_flag(const SignOptions& options) {
  if (!options.encryption) return 0;
  return options.encryption->key_bits == 256 ? flag_encrypted_aes256 : flag_encrypted_aes128;
}

std::uint32_t compression_flag(Compression c) {
  switch (c) {
    case Compression::none:
      return 0;
    case Compression::lzma2:
      return flag_compressed_lzma2;
    case Compression::lzma2_arm_thumb:
      return flag_compressed_lzma2 | flag_compressed_arm_thumb;
  }
  return 0;
}

// imgtool's ECDSA signature length with --pad-sig (sig_len()): the largest DER encoding.
std::size_t padded_ecdsa_size(KeyType type) {
  return type == KeyType::ecdsa_p384 ? 103 : 72;
}

// Chunks of a payload held in memory (a compressed payload).
class MemorySource {
 public:
  explicit MemorySource(ByteView data) : data_(data) {}
  ByteView next() {
    std::size_t n = std::min(chunk_size, data_.size() - offset_);
    ByteView chunk = data_.subspan(offset_, n);
    offset_ += n;
    return chunk;
  }

 private:
  ByteView data_;
  std::size_t offset_ = 0;
};

}  // namespace

void validate(const SignOptions& o, const Signer* signer) {
  auto usage = [](std::string message, std::string hint = {}) {
    return Error(ExitCode::usage, std::move(message), std::move(hint));
  };
  if (signer && o.fixed_signature)
    throw usage("can not sign using a key and provide a fixed signature at the same time",
                "drop --key when assembling with --fix-sig");
  std::optional<KeyType> type;
  if (signer) type = signer->type();
  if (o.fixed_signature) type = public_key_type(o.fixed_signature->public_key_der);
  if (o.signer_public_key) {
    if (signer) throw usage("--fix-sig-pubkey without --fix-sig names the signer for --vector-to-sign: drop --key");
    if (!o.vector_to_sign) throw usage("--fix-sig-pubkey needs --fix-sig FILE (or --vector-to-sign)");
    type = public_key_type(*o.signer_public_key);
  }
  if (o.pure && type != KeyType::ed25519)
    throw usage(fmt::format("--pure signs with Ed25519 only; the key is {}",
                            type ? std::string(key_type_name(*type)) : std::string("missing")),
                "sign with an Ed25519 key, or drop --pure");
  if (o.sig_out && !signer && !o.fixed_signature)
    throw usage("--sig-out needs a signature: pass --key (or --fix-sig)");
  if (o.encryption && type) {
    auto enc = o.encryption->key.kind;
    bool ok = true;
    if (*type == KeyType::ecdsa_p256) ok = enc == EncryptionKeyKind::ecies_p256;
    if (*type == KeyType::ecdsa_p384) ok = false;  // imgtool wants a P-384 encryption key, which MCUboot has not
    if (is_rsa(*type)) ok = enc == EncryptionKeyKind::rsa_oaep_2048;
    if (!ok)
      throw usage(fmt::format("signing and encryption must use the same type of key: {} signs, {} encrypts",
                              key_type_name(*type), encryption_key_kind_name(enc)),
                  "imgtool's rule: an ECDSA P-256 signing key needs an ECIES-P256 encryption key, an RSA one "
                  "RSA-OAEP; Ed25519 signing keys go with any");
  }
}

SignResult sign_image(const std::filesystem::path& input_path, const std::filesystem::path& output_path,
                      const SignOptions& options, const Signer* signer, const Progress& progress) {
  validate(options);
  validate(options, signer);
  std::optional<ImageInput> input_holder;
  input_holder.emplace(input_path, options.slot_size);
  ImageInput& input = *input_holder;
  const bool vector_only = options.vector_to_sign.has_value();
  const bool pad = (options.pad || options.confirm) && !vector_only;
  const std::uint64_t input_size = input.size();
  if (!options.pad_header && input_size < options.header_size)
    throw Error(ExitCode::usage,
                fmt::format("{} is {} bytes, smaller than --header-size {:#x}", input_path.string(), input_size,
                            options.header_size),
                "pass --pad-header to add the header in front of the payload");
  const std::uint64_t payload_size = options.pad_header ? input_size : input_size - options.header_size;
  if (payload_size > 0xffffffefu)
    throw Error(ExitCode::usage,
                fmt::format("{} is too large for an MCUboot image (4 GiB limit)", input_path.string()));

  SignResult result;
  result.uncompressed_size = payload_size;
  // The key the image is signed with: the signer's, or the one an external signature must verify with.
  std::optional<KeyType> key_type;
  Bytes key_bytes;
  if (signer) {
    key_type = signer->type();
    key_bytes = mcuboot_public_key_bytes(signer->public_key_der());
  } else if (options.fixed_signature) {
    key_type = public_key_type(options.fixed_signature->public_key_der);
    key_bytes = mcuboot_public_key_bytes(options.fixed_signature->public_key_der);
  } else if (options.signer_public_key) {
    key_type = public_key_type(*options.signer_public_key);
    key_bytes = mcuboot_public_key_bytes(*options.signer_public_key);
  }
  result.hash = options.pure ? HashAlg::sha512
                             : options.hash.value_or(key_type == KeyType::ecdsa_p384 ? HashAlg::sha384 : HashAlg::sha256);
  result.key_type = key_type;
  result.key_hash = key_type ? digest(result.hash, key_bytes) : Bytes(hash_size(result.hash), 0);
  const std::size_t digest_size = hash_size(result.hash);

  // Encryption: a fresh content key, wrapped for the device key before anything is written.
  Bytes content_key;
  std::optional<Tlv> key_tlv;
  TrailerLayout layout = options.trailer;
  if (options.encryption) {
    content_key = random_bytes(options.encryption->key_bits / 8);
    auto [type, value] = wrap_content_key(options.encryption->key, content_key, options.encryption->hmac);
    key_tlv = Tlv{type, value};
    result.encryption_tlv = type;
    layout.enc_key_slot = options.save_enctlv ? value.size() : 16;
  }
  struct Wipe {
    Bytes& key;
    ~Wipe() { OPENSSL_cleanse(key.data(), key.size()); }
  } wipe{content_key};

  auto sign_digest = [&](ByteView message) {
    Bytes sig = signer->sign(message, result.hash);
    if (options.pad_sig && is_ecdsa(signer->type())) sig.resize(std::max(sig.size(), padded_ecdsa_size(signer->type())), 0);
    return sig;
  };
  auto unprotected_min = [&] {
    std::size_t n = tlv_info_size + tlv_entry_header_size + digest_size;
    if (options.pure) n += tlv_entry_header_size + 1;
    if (key_type)
      n += 2 * tlv_entry_header_size + (options.public_key_full ? key_bytes.size() : digest_size) +
           (options.fixed_signature ? options.fixed_signature->signature.size() : min_signature_size(*key_type));
    if (key_tlv) n += tlv_entry_header_size + key_tlv->value.size();
    return n;
  };

  std::vector<Tlv> base_protected = protected_tlvs(options, result.hash, result.key_hash, {});
  const std::uint32_t enc_flag = encryption_flag(options);

  // --compression: first the image as it will be once decompressed (its digest and signature go into
  // the compressed image's protected TLVs), compressing the input on the way; then the compressed one,
  // unless compression does not shrink it (imgtool keeps the plain image then).
  Bytes compressed_payload;
  std::vector<Tlv> compression_tlvs;
  if (options.compression != Compression::none) {
    Bytes plain_protected = encode_tlv_area(protected_tlv_info_magic, base_protected);
    ImageHeader plain;
    plain.load_addr = options.rom_fixed.value_or(options.load_addr);
    plain.header_size = options.header_size;
    plain.protected_tlv_size = static_cast<std::uint16_t>(plain_protected.size());
    plain.image_size = static_cast<std::uint32_t>(enc_flag ? round_up16(payload_size) : payload_size);
    plain.flags = header_flags(options) | enc_flag;
    plain.version = options.version;
    std::uint64_t plain_total = hashed_size(plain) + unprotected_min();
    if (plain_total + trailer_size(layout) > options.slot_size)
      throw Error(ExitCode::usage,
                  fmt::format("the decompressed image ({:#x} bytes) + trailer ({:#x}) exceeds --slot-size {:#x}: "
                              "the bootloader could not decompress it into the slot",
                              plain_total, trailer_size(layout), options.slot_size),
                  "raise --slot-size, or make the firmware smaller");
    Hasher hasher(result.hash);
    Compressor compressor(options.compression);
    Bytes head = encode_header(plain);
    head.resize(options.header_size, options.erased_value);
    hasher.update(head);
    std::uint64_t done = 0;
    for (ByteView chunk = input.next(); !chunk.empty(); chunk = input.next()) {
      check_interrupted();
      hasher.update(chunk);
      compressor.update(chunk);
      done += chunk.size();
      if (progress) progress(done, input_size);
    }
    if (done != input_size)
      throw Error(ExitCode::failure, fmt::format("{} changed size while it was being read", input_path.string()));
    if (enc_flag) hasher.update(Bytes(plain.image_size - payload_size, 0));
    hasher.update(plain_protected);
    Bytes plain_digest = hasher.finish();
    Bytes plain_signature = signer ? sign_digest(plain_digest) : Bytes{};
    Bytes stream = compressor.finish();
    std::size_t tlv_values = 4 + plain_digest.size() + plain_signature.size();
    if (stream.size() + tlv_values < input_size) {
      compressed_payload = lzma2_header();
      compressed_payload.insert(compressed_payload.end(), stream.begin(), stream.end());
      Bytes size_value;
      put_le32(size_value, static_cast<std::uint32_t>(payload_size));
      compression_tlvs.push_back({tlv::decomp_size, size_value});
      compression_tlvs.push_back({tlv::decomp_sha, plain_digest});
      if (!plain_signature.empty()) compression_tlvs.push_back({tlv::decomp_signature, plain_signature});
      if (enc_flag) {
        Bytes comp_size;
        put_le32(comp_size, static_cast<std::uint32_t>(compressed_payload.size()));
        compression_tlvs.push_back({tlv::comp_dec_size, comp_size});
      }
      result.compressed = true;
    } else {
      input_holder.emplace(input_path, options.slot_size);  // plain image after all: read the input again
    }
  }

  result.protected_tlvs = result.compressed ? protected_tlvs(options, result.hash, result.key_hash, compression_tlvs)
                                            : base_protected;
  Bytes protected_area = encode_tlv_area(protected_tlv_info_magic, result.protected_tlvs);
  const std::uint64_t body_size = result.compressed ? compressed_payload.size() : payload_size;
  const std::uint64_t stored_size = enc_flag ? round_up16(body_size) : body_size;

  ImageHeader& header = result.header;
  header.load_addr = options.rom_fixed.value_or(options.load_addr);
  header.header_size = options.header_size;
  header.protected_tlv_size = static_cast<std::uint16_t>(protected_area.size());
  header.image_size = static_cast<std::uint32_t>(stored_size);
  header.flags = header_flags(options) | enc_flag | (result.compressed ? compression_flag(options.compression) : 0);
  header.version = options.version;

  // Refuse early what cannot fit, with the smallest the unprotected area could be.
  std::uint64_t hashed_total = hashed_size(header);
  check_fits_slot(hashed_total + unprotected_min(), layout, options.slot_size);

  // --vector-to-sign digest writes only the digest at the end; everything else streams to the output.
  const bool stream_out = options.vector_to_sign != SignOptions::Vector::digest;
  std::optional<ImageOutput> output;
  if (stream_out) {
    output.emplace(output_path);
    output->reserve(pad ? options.slot_size : hashed_total + unprotected_min());
  }
  const bool encrypt_body = options.encryption && !options.encryption->clear && !vector_only;
  std::optional<AesCtr> cipher;
  if (encrypt_body) cipher.emplace(content_key);
  const bool keep_region = options.pure;  // Ed25519 signs the image itself
  Bytes region;
  Hasher hasher(result.hash);
  Bytes cipher_buffer;

  auto emit_plain = [&](ByteView bytes) {  // header and protected TLVs: never encrypted
    hasher.update(bytes);
    if (keep_region) region.insert(region.end(), bytes.begin(), bytes.end());
    if (output) output->write(bytes);
  };
  std::optional<OverlappedWriter> overlapped;
  if (output && !output->hex() && stored_size >= 2 * chunk_size) overlapped.emplace(*output);
  auto emit_body = [&](ByteView plain) {  // the payload: hashed in plaintext, written encrypted
    if (keep_region) region.insert(region.end(), plain.begin(), plain.end());
    ByteView out = plain;
    if (cipher) {
      cipher_buffer.resize(plain.size());
      cipher->apply(plain, cipher_buffer.data());
      out = cipher_buffer;
    }
    if (overlapped) {
      overlapped->start(out);
      hasher.update(plain);
      overlapped->wait();
    } else {
      hasher.update(plain);
      if (output) output->write(out);
    }
  };

  Bytes header_bytes = encode_header(header);
  if (options.pad_header) {
    header_bytes.resize(options.header_size, options.erased_value);
    emit_plain(header_bytes);
  }
  std::uint64_t consumed = 0;
  if (result.compressed) {
    MemorySource source(compressed_payload);
    for (ByteView chunk = source.next(); !chunk.empty(); chunk = source.next()) {
      check_interrupted();
      emit_body(chunk);
      consumed += chunk.size();
    }
  } else {
    // Without --pad-header the input's first header_size bytes are the header's place: they must be
    // zero (imgtool's check); the 32-byte header overwrites their start.
    for (ByteView chunk = input.next(); !chunk.empty(); chunk = input.next()) {
      check_interrupted();
      if (!options.pad_header && consumed < options.header_size) {
        std::size_t in_header =
            static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), options.header_size - consumed));
        if (std::any_of(chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(in_header),
                        [](auto b) { return b != 0; }))
          throw Error(ExitCode::usage, "header padding was not requested and the image does not start with zeros",
                      "pass --pad-header, or reserve --header-size zero bytes at the start of the image");
        Bytes head(chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(in_header));
        for (std::size_t i = 0; i < head.size() && consumed + i < header_struct_size; ++i)
          head[i] = header_bytes[static_cast<std::size_t>(consumed) + i];
        emit_plain(head);
        if (chunk.size() > in_header) emit_body(chunk.subspan(in_header));
      } else {
        emit_body(chunk);
      }
      consumed += chunk.size();
      if (progress) progress(consumed, input_size);
    }
    if (consumed != input_size)
      throw Error(ExitCode::failure, fmt::format("{} changed size while it was being read", input_path.string()));
  }
  overlapped.reset();
  if (stored_size > body_size) emit_body(Bytes(stored_size - body_size, 0));  // AES-CTR works on 16-byte blocks
  emit_plain(protected_area);
  result.digest = hasher.finish();

  if (options.vector_to_sign) {
    result.vector = options.vector_to_sign;
    if (*options.vector_to_sign == SignOptions::Vector::digest) {
      write_file_atomic(output_path, result.digest);
      result.output_bytes = result.digest.size();
    } else {
      output->commit();
      result.output_bytes = output->written();
    }
    result.image_bytes = hashed_total;
    return result;
  }

  ByteView message = options.pure ? ByteView(region) : ByteView(result.digest);
  if (signer) {
    result.signature = sign_digest(message);
  } else if (options.fixed_signature) {
    result.signature = options.fixed_signature->signature;
    if (!verify_signature(options.fixed_signature->public_key_der, message, result.hash, result.signature))
      throw Error(ExitCode::verification_failed,
                  fmt::format("the fixed signature does not verify over this image's {} with the given {} public key",
                              options.pure ? "bytes" : hash_label(result.hash) + " digest", key_type_name(*key_type)),
                  "nothing was written; sign the vector written by --vector-to-sign with the matching private key");
  }

  std::vector<Tlv> unprotected = {{hash_tlv_type(result.hash), result.digest}};
  if (options.pure) unprotected.push_back({tlv_sig_pure, Bytes{0x01}});
  if (key_type) {
    if (options.public_key_full)
      unprotected.push_back({tlv::pubkey, key_bytes});
    else
      unprotected.push_back({tlv::keyhash, result.key_hash});
    unprotected.push_back({signature_tlv_type(*key_type), result.signature});
  }
  if (key_tlv) unprotected.push_back(*key_tlv);
  Bytes unprotected_area = encode_tlv_area(tlv_info_magic, unprotected);
  output->write(unprotected_area);
  result.image_bytes = output->written();
  check_fits_slot(result.image_bytes, layout, options.slot_size);

  Bytes trailer;
  if (pad) trailer = encode_trailer(layout, options.erased_value, options.confirm);
  auto write_sig_out = [&] {
    if (options.sig_out) write_file_atomic(*options.sig_out, as_bytes(to_base64(result.signature)));
  };
  if (output->hex()) {
    std::optional<std::uint32_t> base = options.hex_addr;
    if (!base && input.base_address()) {
      base = *input.base_address();
      // imgtool moves the base down to make room for a prepended header (but leaves 0 alone).
      if (options.pad_header && *base != 0) {
        if (*base < options.header_size)
          throw Error(ExitCode::usage, fmt::format("the HEX input starts at {:#x}, below --header-size", *base),
                      "give the output base address with --hex-addr");
        *base -= options.header_size;
      }
    }
    if (!base)
      throw Error(ExitCode::usage, "no address exists in the input file, and none was given for the HEX output",
                  "pass --hex-addr ADDRESS, or write a .bin output");
    output->commit_hex(*base, trailer, pad ? options.slot_size : 0);
    result.output_bytes = result.image_bytes + trailer.size();
    write_sig_out();
    return result;
  }
  if (pad) {
    Bytes fill(chunk_size, options.erased_value);
    std::uint64_t to_fill = options.slot_size - result.image_bytes - trailer.size();
    while (to_fill > 0) {
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(to_fill, fill.size()));
      output->write(ByteView(fill.data(), n));
      to_fill -= n;
    }
    output->write(trailer);
  }
  output->commit();
  result.output_bytes = output->written();
  write_sig_out();
  return result;
}


namespace {

const TlvEntry* find_entry(const std::optional<TlvArea>& area, std::uint16_t type) {
  if (area)
    for (const auto& e : area->entries)
      if (e.type == type) return &e;
  return nullptr;
}

const TlvEntry* find_encryption_tlv(const ParsedImage& image) {
  for (const auto& e : image.unprotected_area.entries)
    if (is_encryption_tlv(e.type)) return &e;
  return nullptr;
}

std::size_t content_key_size(const ImageHeader& header) {
  return (header.flags & flag_encrypted_aes256) ? 32 : 16;
}

bool is_encrypted(const ImageHeader& header) {
  return (header.flags & (flag_encrypted_aes128 | flag_encrypted_aes256)) != 0;
}

// An ECDSA signature padded with zeros after its DER encoding (imgtool --pad-sig): the DER part, as
// MCUboot reads it. Anything else is returned unchanged.
ByteView unpadded_ecdsa(ByteView sig) {
  if (sig.size() < 2 || sig[0] != 0x30 || sig[1] >= 0x80) return sig;
  std::size_t der = std::size_t{sig[1]} + 2;
  if (der >= sig.size() || std::any_of(sig.begin() + static_cast<std::ptrdiff_t>(der), sig.end(),
                                        [](std::uint8_t b) { return b != 0; }))
    return sig;
  return sig.first(der);
}

bool is_signature_tlv(std::uint16_t type) {
  return type == tlv::ecdsa_sig || type == tlv::ed25519 || type == tlv::rsa2048_pss || type == tlv::rsa3072_pss;
}

// The content key of an encrypted image, or an Error(verification_failed) saying why it cannot be had.
Bytes open_content_key(const ParsedImage& image, const ContentKeyOpener& opener) {
  const TlvEntry* entry = find_encryption_tlv(image);
  if (!entry)
    throw FormatError(image.unprotected_area.offset, "the header says the image is encrypted but no TLV carries its key");
  return opener.open(entry->type, entry->value, content_key_size(image.header));
}

// The digest of the image a compressed image decompresses to: its header (compression flags cleared,
// the decompressed size), the header padding, the decompressed payload (zero-padded to 16 bytes when
// encrypted) and the protected TLVs other than the compression ones.
struct Decompressed {
  Bytes digest;
  std::uint64_t size = 0;
};
// `emit`, when set, receives every byte hashed: the decompressed image up to its unprotected TLVs.
Decompressed decompressed_digest(const ParsedImage& image, ByteView header_bytes, ByteView body, HashAlg hash,
                                 std::uint32_t declared_size, const std::function<void(ByteView)>& emit = {}) {
  const ImageHeader& h = image.header;
  if (h.flags & flag_compressed_lzma1) throw FormatError(16, "LZMA1-compressed images are not supported");
  std::vector<Tlv> kept;
  if (image.protected_area)
    for (const auto& e : image.protected_area->entries)
      if (e.type < tlv::decomp_size || e.type > tlv::comp_dec_size) kept.push_back({e.type, e.value});
  Bytes protected_area = encode_tlv_area(protected_tlv_info_magic, kept);
  ImageHeader plain = h;
  plain.flags &= ~compression_flags;
  plain.image_size = is_encrypted(h) ? static_cast<std::uint32_t>(round_up16(declared_size)) : declared_size;
  plain.protected_tlv_size = static_cast<std::uint16_t>(protected_area.size());
  // The stream's length: the whole body, or what COMP_DEC_SIZE says of a body padded for encryption.
  ByteView stream = body;
  if (const TlvEntry* comp = find_entry(image.protected_area, tlv::comp_dec_size)) {
    if (comp->value.size() != 4 || get_le32(comp->value, 0) > body.size())
      throw FormatError(comp->offset, "COMP_DEC_SIZE is not a 4-byte size within the payload");
    stream = body.first(get_le32(comp->value, 0));
  }
  Hasher hasher(hash);
  auto take = [&](ByteView piece) {
    hasher.update(piece);
    if (emit) emit(piece);
  };
  Bytes head = encode_header(plain);
  head.insert(head.end(), header_bytes.begin() + header_struct_size, header_bytes.end());
  take(head);
  Decompressed out;
  out.size = decompress(stream, (h.flags & flag_compressed_arm_thumb) != 0, declared_size, take);
  if (out.size != declared_size)
    throw Error(ExitCode::verification_failed,
                fmt::format("the payload decompresses to {} bytes, DECOMP_SIZE says {}", out.size, declared_size),
                "the image is truncated or was altered");
  if (plain.image_size > declared_size) take(Bytes(plain.image_size - declared_size, 0));
  take(protected_area);
  out.digest = hasher.finish();
  return out;
}

}  // namespace

ImageReport inspect_image(const std::filesystem::path& file, const std::optional<Bytes>& public_key_der,
                          const Progress& progress, const ContentKeyOpener* decrypt) {
  ImageReport report;
  std::optional<HexImage> hex;
  if (is_intel_hex_path(file.string())) hex = parse_intel_hex(read_text_file(file));

  // The small parts first: header, TLV areas and trailer decide how the payload is checked.
  std::optional<ChunkReader> reader;
  if (!hex) reader.emplace(file, chunk_size);
  report.file_size = hex ? hex->data.size() : reader->size();
  auto bytes_at = [&](std::uint64_t offset, std::size_t length) -> Bytes {
    if (hex) {
      if (offset >= hex->data.size()) return {};
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(length, hex->data.size() - offset));
      return Bytes(hex->data.begin() + static_cast<std::ptrdiff_t>(offset),
                   hex->data.begin() + static_cast<std::ptrdiff_t>(offset + n));
    }
    return read_file_range(file, offset, length);
  };
  ImageHeader header = parse_header(bytes_at(0, header_struct_size));
  std::uint64_t payload_end = std::uint64_t{header.header_size} + header.image_size;
  if (payload_end > report.file_size)
    throw FormatError(12, fmt::format("truncated image: header size {} + image size {} = {} bytes, but the file has {}",
                                      header.header_size, header.image_size, payload_end, report.file_size));
  // Each area is at most 65535 bytes long.
  Bytes tlv_bytes = bytes_at(payload_end, 2 * 0xffff);
  report.image = parse_tlv_areas(header, tlv_bytes);
  if (report.image.end < report.file_size) {
    std::uint64_t tail_length = std::min<std::uint64_t>(256, report.file_size - report.image.end);
    report.image.trailer =
        parse_trailer(bytes_at(report.file_size - tail_length, static_cast<std::size_t>(tail_length)));
  }

  const auto& entries = report.image.unprotected_area.entries;
  bool pure = false;
  for (const auto& e : entries) {
    if (auto alg = hash_alg_of_tlv(e.type); alg && !report.hash) report.hash = alg;
    if (is_signature_tlv(e.type)) report.signature_type = e.type;
    if (e.type == tlv_sig_pure) pure = true;
  }
  if (!report.hash)
    throw FormatError(report.image.unprotected_area.offset, "the unprotected TLV area has no SHA256/384/512 hash TLV");
  const TlvEntry* hash_entry = nullptr;
  for (const auto& e : entries)
    if (e.type == hash_tlv_type(*report.hash)) hash_entry = &e;

  const bool encrypted = is_encrypted(header);
  const bool compressed = (header.flags & compression_flags) != 0;
  Bytes content_key;
  struct Wipe {
    Bytes& key;
    ~Wipe() { OPENSSL_cleanse(key.data(), key.size()); }
  } wipe{content_key};
  if (encrypted) {
    const TlvEntry* enc = find_encryption_tlv(report.image);
    if (!enc)
      throw FormatError(report.image.unprotected_area.offset,
                        "the header says the image is encrypted but no TLV carries its key");
    report.encryption_tlv = enc->type;
    if (decrypt) content_key = open_content_key(report.image, *decrypt);
  }
  if (compressed) {
    const TlvEntry* size = find_entry(report.image.protected_area, tlv::decomp_size);
    if (!size || size->value.size() != 4)
      throw FormatError(header.header_size + header.image_size,
                        "the header says the image is compressed but no 4-byte DECOMP_SIZE TLV is protected");
    report.decompressed_size = get_le32(size->value, 0);
  }

  // The one pass over the hashed region: as stored, and (encrypted, with the key) decrypted.
  std::optional<AesCtr> cipher;
  if (!content_key.empty()) cipher.emplace(content_key);
  const bool keep_body = compressed;
  const bool keep_region = pure;
  Bytes header_bytes, body, region, plain_chunk;
  Hasher stored_hasher(*report.hash);
  std::optional<Hasher> plain_hasher;
  if (cipher) plain_hasher.emplace(*report.hash);
  const std::uint64_t to_hash = hashed_size(header);
  const std::uint64_t body_begin = header.header_size, body_end = body_begin + header.image_size;
  std::uint64_t done = 0;
  auto feed = [&](ByteView chunk) {
    stored_hasher.update(chunk);
    // Split the chunk at the body's bounds: only the body is encrypted.
    std::uint64_t at = done;
    ByteView rest = chunk;
    while (!rest.empty()) {
      std::uint64_t limit = at < body_begin ? body_begin : at < body_end ? body_end : to_hash;
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(rest.size(), limit - at));
      ByteView part = rest.first(n);
      bool in_body = at >= body_begin && at < body_end;
      ByteView plain = part;
      if (in_body && cipher) {
        plain_chunk.resize(n);
        cipher->apply(part, plain_chunk.data());
        plain = plain_chunk;
      }
      if (plain_hasher) plain_hasher->update(plain);
      if (at < body_begin) header_bytes.insert(header_bytes.end(), part.begin(), part.end());
      if (in_body && keep_body) body.insert(body.end(), plain.begin(), plain.end());
      if (keep_region) region.insert(region.end(), plain.begin(), plain.end());
      at += n;
      rest = rest.subspan(n);
    }
    done += chunk.size();
  };
  if (hex) {
    feed(ByteView(hex->data.data(), static_cast<std::size_t>(to_hash)));
  } else {
    for (ByteView chunk = reader->next(); !chunk.empty() && done < to_hash; chunk = reader->next()) {
      check_interrupted();
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), to_hash - done));
      feed(chunk.first(n));
      if (progress) progress(done, to_hash);
    }
    if (done != to_hash)
      throw FormatError(static_cast<std::size_t>(done), "the file ended while its hashed region was being read");
  }
  Bytes stored_digest = stored_hasher.finish();
  auto fail = [&](std::string reason) {
    if (report.failure.empty()) report.failure = std::move(reason);
  };
  bool hash_checked = true;
  if (plain_hasher) {
    report.computed_digest = plain_hasher->finish();
    report.decrypted = true;
    if (report.computed_digest != hash_entry->value && stored_digest == hash_entry->value) {
      report.computed_digest = stored_digest;  // a --clear image: flags and key TLV, plaintext body
      report.decrypted = false;
    }
  } else {
    report.computed_digest = stored_digest;
    if (encrypted && stored_digest != hash_entry->value) {
      hash_checked = false;  // the hash covers the plaintext
      report.computed_digest.clear();
      report.unchecked.push_back("the payload against the image hash: it is encrypted and the hash covers the "
                                 "plaintext (pass --decrypt-key)");
    }
  }
  report.hash_ok = hash_checked && hash_entry->value == report.computed_digest;
  if (hash_checked && !report.hash_ok)
    fail(fmt::format("hash mismatch: the image's {} TLV says {} but the header, payload and protected TLVs hash to {}",
                     tlv_type_name(hash_entry->type), to_hex(hash_entry->value), to_hex(report.computed_digest)));

  // Compressed: the decompressed image's digest, when the compressed payload can be read.
  const TlvEntry* decomp_sha = compressed ? find_entry(report.image.protected_area, tlv::decomp_sha) : nullptr;
  std::optional<Bytes> decompressed;
  if (compressed && (!encrypted || report.decrypted || (report.hash_ok && content_key.empty() && !encrypted))) {
    if (!decomp_sha)
      throw FormatError(header.header_size + header.image_size, "the compressed image has no DECOMP_SHA TLV");
    auto d = decompressed_digest(report.image, header_bytes, body, *report.hash, *report.decompressed_size);
    decompressed = d.digest;
    report.decompressed_ok = d.digest == decomp_sha->value;
    if (!*report.decompressed_ok)
      fail(fmt::format("the payload decompresses to an image with digest {}, DECOMP_SHA says {}", to_hex(d.digest),
                       to_hex(decomp_sha->value)));
  } else if (compressed && encrypted && report.hash_ok) {
    // A --clear compressed image was already handled above; nothing else to do.
  } else if (compressed) {
    report.unchecked.push_back("the decompressed image: the compressed payload is encrypted (pass --decrypt-key)");
  }

  for (const auto& e : entries) {
    if (e.type == tlv::keyhash) report.embedded_key_hash = e.value;
    if (e.type == tlv::pubkey) report.embedded_key_hash = digest(*report.hash, e.value);
  }
  if (!public_key_der) return report;

  KeyType key_type = public_key_type(*public_key_der);
  Bytes key_hash = digest(*report.hash, mcuboot_public_key_bytes(*public_key_der));
  report.key_hash = to_hex(key_hash);
  std::uint16_t expected_signature = signature_tlv_type(key_type);
  const TlvEntry* signature = nullptr;
  for (const auto& e : entries)
    if (e.type == expected_signature) signature = &e;
  // The key type first: with a key of the wrong type the key hash can only differ, and
  // "wrong key type" says what to fix.
  if (!signature) {
    report.signature_ok = false;
    if (report.signature_type)
      fail(fmt::format("wrong key type: the image carries a {} signature but the key is {}",
                       tlv_type_name(*report.signature_type), key_type_name(key_type)));
    else
      fail("the image is not signed (no signature TLV)");
  }
  if (report.embedded_key_hash) {
    report.key_hash_ok = *report.embedded_key_hash == key_hash;
    if (!*report.key_hash_ok)
      fail(fmt::format("key hash mismatch: the image was signed by the key with hash {}, the given key's hash is {}",
                       to_hex(*report.embedded_key_hash), to_hex(key_hash)));
  }
  if (!signature) return report;
  if (pure && !hash_checked) {
    report.unchecked.push_back("the Ed25519 signature: it covers the plaintext image (pass --decrypt-key)");
    return report;
  }
  // Without the plaintext, the signature is checked over the digest the image carries.
  ByteView signed_digest = hash_checked ? ByteView(report.computed_digest) : ByteView(hash_entry->value);
  ByteView message = pure ? ByteView(region) : signed_digest;
  ByteView signature_value = signature->value;
  if (signature->type == tlv::ecdsa_sig) signature_value = unpadded_ecdsa(signature_value);
  report.signature_ok = verify_signature(*public_key_der, message, *report.hash, signature_value);
  if (!*report.signature_ok)
    fail(fmt::format("bad signature: the {} signature does not verify over the {} with this {} key",
                     tlv_type_name(signature->type), pure ? "image" : hash_label(*report.hash) + " digest",
                     key_type_name(key_type)));
  if (decompressed) {
    if (const TlvEntry* sig = find_entry(report.image.protected_area, tlv::decomp_signature)) {
      if (!verify_signature(*public_key_der, *decompressed, *report.hash, sig->value)) {
        report.decompressed_ok = false;
        fail(fmt::format("bad signature: DECOMP_SIGNATURE does not verify over the decompressed image with this {} key",
                         key_type_name(key_type)));
      }
    }
  }
  return report;
}

ImageReport verify_image(const std::filesystem::path& file, const std::optional<Bytes>& public_key_der,
                         const Progress& progress, const ContentKeyOpener* decrypt) {
  ImageReport report = inspect_image(file, public_key_der, progress, decrypt);
  if (!report.ok())
    throw Error(ExitCode::verification_failed, fmt::format("{}: {}", file.string(), report.failure),
                public_key_der ? "the image was modified, or signed with a different key"
                               : "the image was modified after signing");
  return report;
}

DecryptResult decrypt_image(const std::filesystem::path& input, const std::filesystem::path& output,
                            const ContentKeyOpener& opener, const Progress& progress) {
  if (is_intel_hex_path(input.string()) || is_intel_hex_path(output.string()))
    throw Error(ExitCode::usage, "kiln image decrypt reads and writes binary images", "convert the .hex first");
  ChunkReader reader(input, chunk_size);
  const std::uint64_t file_size = reader.size();
  ImageHeader header = parse_header(read_file_range(input, 0, header_struct_size));
  if (!is_encrypted(header))
    throw Error(ExitCode::usage, fmt::format("{} is not an encrypted image (no ENCRYPTED flag)", input.string()));
  std::uint64_t payload_end = std::uint64_t{header.header_size} + header.image_size;
  if (payload_end > file_size)
    throw FormatError(12, fmt::format("truncated image: header size {} + image size {} = {} bytes, but the file has {}",
                                      header.header_size, header.image_size, payload_end, file_size));
  ParsedImage parsed = parse_tlv_areas(header, read_file_range(input, payload_end, 2 * 0xffff));
  Bytes key = open_content_key(parsed, opener);
  struct Wipe {
    Bytes& key;
    ~Wipe() { OPENSSL_cleanse(key.data(), key.size()); }
  } wipe{key};
  std::optional<HashAlg> hash;
  const TlvEntry* hash_entry = nullptr;
  for (const auto& e : parsed.unprotected_area.entries)
    if (auto alg = hash_alg_of_tlv(e.type); alg && !hash) {
      hash = alg;
      hash_entry = &e;
    }
  if (!hash) throw FormatError(parsed.unprotected_area.offset, "the unprotected TLV area has no SHA256/384/512 hash TLV");

  AesCtr cipher(key);
  Hasher hasher(*hash);
  AtomicFile out(output);
  out.reserve(file_size);
  const std::uint64_t body_begin = header.header_size, body_end = payload_end, hashed_end = hashed_size(header);
  std::uint64_t at = 0;
  Bytes plain;
  for (ByteView chunk = reader.next(); !chunk.empty(); chunk = reader.next()) {
    check_interrupted();
    ByteView rest = chunk;
    while (!rest.empty()) {
      std::uint64_t limit = at < body_begin ? body_begin : at < body_end ? body_end : hashed_end > at ? hashed_end : file_size;
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(rest.size(), limit - at));
      ByteView part = rest.first(n);
      if (at >= body_begin && at < body_end) {
        plain.resize(n);
        cipher.apply(part, plain.data());
        part = plain;
      }
      if (at < hashed_end) hasher.update(part);
      out.write(part);
      at += n;
      rest = rest.subspan(n);
    }
    if (progress) progress(at, file_size);
  }
  if (at != file_size) throw Error(ExitCode::failure, fmt::format("{} changed size while it was being read", input.string()));
  if (hasher.finish() != hash_entry->value)
    throw Error(ExitCode::verification_failed,
                fmt::format("{}: the key opened the content key, but the decrypted image does not match its {} TLV",
                            input.string(), tlv_type_name(hash_entry->type)),
                "the payload was altered (or the image is a --clear image); nothing was written");
  out.commit();
  return {header, find_encryption_tlv(parsed)->type, file_size};
}

DecompressResult decompress_image(const std::filesystem::path& input, const std::filesystem::path& output,
                                  const ContentKeyOpener* opener) {
  if (is_intel_hex_path(input.string()) || is_intel_hex_path(output.string()))
    throw Error(ExitCode::usage, "decompressing reads and writes binary images", "convert the .hex first");
  const std::uint64_t file_size = std::filesystem::file_size(input);
  ImageHeader header = parse_header(read_file_range(input, 0, header_struct_size));
  if (!(header.flags & compression_flags))
    throw Error(ExitCode::usage, fmt::format("{} is not a compressed image (no LZMA flag)", input.string()));
  const std::uint64_t payload_end = std::uint64_t{header.header_size} + header.image_size;
  if (payload_end > file_size)
    throw FormatError(12, fmt::format("truncated image: header size {} + image size {} = {} bytes, but the file has {}",
                                      header.header_size, header.image_size, payload_end, file_size));
  ParsedImage parsed = parse_tlv_areas(header, read_file_range(input, payload_end, 2 * 0xffff));
  const TlvEntry* size = find_entry(parsed.protected_area, tlv::decomp_size);
  const TlvEntry* sha = find_entry(parsed.protected_area, tlv::decomp_sha);
  const TlvEntry* signature = find_entry(parsed.protected_area, tlv::decomp_signature);
  if (!size || size->value.size() != 4)
    throw FormatError(header.header_size, "the header says the image is compressed but no 4-byte DECOMP_SIZE TLV is protected");
  if (!sha) throw FormatError(header.header_size, "the compressed image carries no protected DECOMP_SHA TLV");
  std::optional<HashAlg> hash;
  for (const auto& e : parsed.unprotected_area.entries)
    if (auto alg = hash_alg_of_tlv(e.type); alg && !hash) hash = alg;
  if (!hash) throw FormatError(parsed.unprotected_area.offset, "the unprotected TLV area has no SHA256/384/512 hash TLV");

  // The compressed payload is at most a slot: held in memory; the decompressed one streams out.
  Bytes header_bytes = read_file_range(input, 0, header.header_size);
  Bytes body = read_file_range(input, header.header_size, header.image_size);
  if (is_encrypted(header) && opener) {
    Bytes key = open_content_key(parsed, *opener);
    struct Wipe {
      Bytes& key;
      ~Wipe() { OPENSSL_cleanse(key.data(), key.size()); }
    } wipe{key};
    AesCtr(key).apply(body, body.data());
  }
  AtomicFile out(output);
  Decompressed plain = decompressed_digest(parsed, header_bytes, body, *hash, get_le32(size->value, 0),
                                           [&](ByteView piece) { out.write(piece); });
  if (plain.digest != sha->value)
    throw Error(ExitCode::verification_failed,
                fmt::format("{}: the decompressed image does not match its DECOMP_SHA TLV", input.string()),
                "the image was altered (or is encrypted and was not decrypted first); nothing was written");
  // The unprotected TLVs of the decompressed image: its hash and signature are the DECOMP ones.
  std::vector<Tlv> unprotected;
  for (const auto& e : parsed.unprotected_area.entries) {
    if (hash_alg_of_tlv(e.type)) {
      unprotected.push_back({e.type, sha->value});
    } else if (is_signature_tlv(e.type)) {
      if (signature) unprotected.push_back({e.type, signature->value});
    } else {
      unprotected.push_back({e.type, e.value});
    }
  }
  Bytes area = encode_tlv_area(tlv_info_magic, unprotected);
  out.write(area);
  DecompressResult result;
  result.output_bytes = out.written();
  result.decompressed_size = plain.size;
  out.commit();
  return result;
}

}  // namespace kiln::mcuboot
