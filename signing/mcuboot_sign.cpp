// Streaming MCUboot sign and verify over files: hash while copying, sign the digest, never keep the image.
#include "signing/mcuboot_sign.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cbor.h>
#include <fmt/format.h>
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

HashAlg default_hash(const Signer* signer) {
  return signer && signer->type() == KeyType::ecdsa_p384 ? HashAlg::sha384 : HashAlg::sha256;
}

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

std::vector<Tlv> protected_tlvs(const SignOptions& options, HashAlg hash, ByteView key_hash) {
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

// Reads up to `length` bytes at `offset` without disturbing a streaming reader: the small parts of
// an image (header, TLV areas, trailer) that decide how the large part is hashed.
Bytes read_at(const std::filesystem::path& path, std::uint64_t offset, std::size_t length) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(ExitCode::failure, fmt::format("cannot read {}: {}", path.string(), std::strerror(errno)));
  Bytes out(length);
  std::size_t filled = 0;
  while (filled < length) {
    ssize_t n = ::pread(fd, out.data() + filled, length - filled, static_cast<off_t>(offset + filled));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    filled += static_cast<std::size_t>(n);
  }
  ::close(fd);
  out.resize(filled);
  return out;
}

std::string hash_label(HashAlg hash) {
  return fmt::format("SHA-{}", hash_size(hash) * 8);
}

}  // namespace

Bytes uuid5(ByteView name_space, std::string_view name) {
  Bytes input(name_space.begin(), name_space.end());
  input.insert(input.end(), name.begin(), name.end());
  Bytes sha1(EVP_MAX_MD_SIZE);
  unsigned length = 0;
  if (EVP_Digest(input.data(), input.size(), sha1.data(), &length, EVP_sha1(), nullptr) != 1)
    throw Error(ExitCode::failure, "cannot compute SHA-1 for a name-based UUID").with_detail(openssl_errors());
  sha1.resize(16);
  sha1[6] = static_cast<std::uint8_t>((sha1[6] & 0x0f) | 0x50);  // version 5
  sha1[8] = static_cast<std::uint8_t>((sha1[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return sha1;
}

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

SignResult sign_image(const std::filesystem::path& input_path, const std::filesystem::path& output_path,
                      const SignOptions& options, const Signer* signer, const Progress& progress) {
  validate(options);
  ImageInput input(input_path, options.slot_size);
  ImageOutput output(output_path);
  const bool pad = options.pad || options.confirm;
  const std::uint64_t input_size = input.size();
  if (!options.pad_header && input_size < options.header_size)
    throw Error(ExitCode::usage,
                fmt::format("{} is {} bytes, smaller than --header-size {:#x}", input_path.string(), input_size,
                            options.header_size),
                "pass --pad-header to add the header in front of the payload");
  const std::uint64_t payload_size = options.pad_header ? input_size : input_size - options.header_size;
  if (payload_size > 0xffffffffu)
    throw Error(ExitCode::usage,
                fmt::format("{} is too large for an MCUboot image (4 GiB limit)", input_path.string()));

  SignResult result;
  result.hash = options.hash.value_or(default_hash(signer));
  Bytes key_bytes;
  if (signer) {
    result.key_type = signer->type();
    key_bytes = mcuboot_public_key_bytes(signer->public_key_der());
    result.key_hash = digest(result.hash, key_bytes);
  } else {
    result.key_hash = Bytes(hash_size(result.hash), 0);  // imgtool's boot record signer id for unsigned images
  }
  result.protected_tlvs = protected_tlvs(options, result.hash, result.key_hash);
  Bytes protected_area = encode_tlv_area(protected_tlv_info_magic, result.protected_tlvs);

  ImageHeader& header = result.header;
  header.load_addr = options.rom_fixed.value_or(options.load_addr);
  header.header_size = options.header_size;
  header.protected_tlv_size = static_cast<std::uint16_t>(protected_area.size());
  header.image_size = static_cast<std::uint32_t>(payload_size);
  header.flags = header_flags(options);
  header.version = options.version;

  // Refuse early what cannot fit, with the smallest the unprotected area could be.
  std::size_t digest_size = hash_size(result.hash);
  std::size_t min_unprotected = tlv_info_size + tlv_entry_header_size + digest_size;
  if (signer)
    min_unprotected += 2 * tlv_entry_header_size + (options.public_key_full ? key_bytes.size() : digest_size) +
                       min_signature_size(signer->type());
  std::uint64_t hashed_total = hashed_size(header);
  check_fits_slot(hashed_total + min_unprotected, options.trailer, options.slot_size);

  // A full disk fails now rather than after the whole input was read.
  output.reserve(pad ? options.slot_size : hashed_total + min_unprotected);
  Hasher hasher(result.hash);
  auto emit_hashed = [&](ByteView bytes) {
    hasher.update(bytes);
    output.write(bytes);
  };

  Bytes header_bytes = encode_header(header);
  if (options.pad_header) {
    header_bytes.resize(options.header_size, options.erased_value);
    emit_hashed(header_bytes);
  }
  // Without --pad-header the input's first header_size bytes are the header's place: they must be
  // zero (imgtool's check); the 32-byte header overwrites their start.
  std::uint64_t consumed = 0;
  std::optional<OverlappedWriter> overlapped;
  if (!output.hex() && input_size >= 2 * chunk_size) overlapped.emplace(output);
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
      emit_hashed(head);
      emit_hashed(chunk.subspan(in_header));
    } else if (overlapped) {
      overlapped->start(chunk);
      hasher.update(chunk);
      overlapped->wait();
    } else {
      emit_hashed(chunk);
    }
    consumed += chunk.size();
    if (progress) progress(consumed, input_size);
  }
  overlapped.reset();
  if (consumed != input_size)
    throw Error(ExitCode::failure, fmt::format("{} changed size while it was being read", input_path.string()));
  emit_hashed(protected_area);
  result.digest = hasher.finish();

  std::vector<Tlv> unprotected = {{hash_tlv_type(result.hash), result.digest}};
  if (signer) {
    if (options.public_key_full)
      unprotected.push_back({tlv::pubkey, key_bytes});
    else
      unprotected.push_back({tlv::keyhash, result.key_hash});
    // Ed25519 signs the digest as its message (imgtool's sign_digest); ECDSA and RSA sign the digest.
    unprotected.push_back({signature_tlv_type(signer->type()), signer->sign(result.digest, result.hash)});
  }
  Bytes unprotected_area = encode_tlv_area(tlv_info_magic, unprotected);
  output.write(unprotected_area);
  result.image_bytes = output.written();
  check_fits_slot(result.image_bytes, options.trailer, options.slot_size);

  Bytes trailer;
  if (pad) trailer = encode_trailer(options.trailer, options.erased_value, options.confirm);
  if (output.hex()) {
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
    output.commit_hex(*base, trailer, pad ? options.slot_size : 0);
    result.output_bytes = result.image_bytes + trailer.size();
    return result;
  }
  if (pad) {
    Bytes fill(chunk_size, options.erased_value);
    std::uint64_t to_fill = options.slot_size - result.image_bytes - trailer.size();
    while (to_fill > 0) {
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(to_fill, fill.size()));
      output.write(ByteView(fill.data(), n));
      to_fill -= n;
    }
    output.write(trailer);
  }
  output.commit();
  result.output_bytes = output.written();
  return result;
}

ImageReport inspect_image(const std::filesystem::path& file, const std::optional<Bytes>& public_key_der,
                          const Progress& progress) {
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
    return read_at(file, offset, length);
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
  for (const auto& e : entries) {
    if (auto alg = hash_alg_of_tlv(e.type); alg && !report.hash) report.hash = alg;
    if (e.type == tlv::ecdsa_sig || e.type == tlv::ed25519 || e.type == tlv::rsa2048_pss || e.type == tlv::rsa3072_pss)
      report.signature_type = e.type;
  }
  if (!report.hash)
    throw FormatError(report.image.unprotected_area.offset, "the unprotected TLV area has no SHA256/384/512 hash TLV");
  const TlvEntry* hash_entry = nullptr;
  for (const auto& e : entries)
    if (e.type == hash_tlv_type(*report.hash)) hash_entry = &e;

  // The one pass over the payload.
  Hasher hasher(*report.hash);
  std::uint64_t to_hash = hashed_size(header);
  if (hex) {
    hasher.update(ByteView(hex->data.data(), static_cast<std::size_t>(to_hash)));
  } else {
    std::uint64_t done = 0;
    for (ByteView chunk = reader->next(); !chunk.empty() && done < to_hash; chunk = reader->next()) {
      check_interrupted();
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), to_hash - done));
      hasher.update(chunk.first(n));
      done += n;
      if (progress) progress(done, to_hash);
    }
    if (done != to_hash)
      throw FormatError(static_cast<std::size_t>(done), "the file ended while its hashed region was being read");
  }
  report.computed_digest = hasher.finish();
  report.hash_ok = hash_entry->value == report.computed_digest;
  auto fail = [&](std::string reason) {
    if (report.failure.empty()) report.failure = std::move(reason);
  };
  if (!report.hash_ok)
    fail(fmt::format("hash mismatch: the image's {} TLV says {} but the header, payload and protected TLVs hash to {}",
                     tlv_type_name(hash_entry->type), to_hex(hash_entry->value), to_hex(report.computed_digest)));

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
  report.signature_ok = verify_signature(*public_key_der, report.computed_digest, *report.hash, signature->value);
  if (!*report.signature_ok)
    fail(fmt::format("bad signature: the {} signature does not verify over the {} digest with this {} key",
                     tlv_type_name(signature->type), hash_label(*report.hash), key_type_name(key_type)));
  return report;
}

ImageReport verify_image(const std::filesystem::path& file, const std::optional<Bytes>& public_key_der,
                         const Progress& progress) {
  ImageReport report = inspect_image(file, public_key_der, progress);
  if (!report.ok())
    throw Error(ExitCode::verification_failed, fmt::format("{}: {}", file.string(), report.failure),
                public_key_der ? "the image was modified, or signed with a different key"
                               : "the image was modified after signing");
  return report;
}

}  // namespace kiln::mcuboot
