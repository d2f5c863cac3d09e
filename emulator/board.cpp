// The emulated board: state persisted in its directory (a restart is a power cycle), flash slots
// as files, MCUboot swap/revert, manufacturing locks and the SMP command handlers.
#include "emulator/board.hpp"

#include <algorithm>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/files.hpp"
#include "emulator/update_check.hpp"
#include "signing/file_digest.hpp"
#include "signing/image_compression.hpp"
#include "signing/mcuboot_sign.hpp"
#include "signing/file_key.hpp"
#include "signing/signer.hpp"
#include "transport/board_api.hpp"

namespace kiln::emu {
namespace fs = std::filesystem;
using smp::Body;

namespace {

constexpr const char* primary_file = "primary.bin";
constexpr const char* secondary_file = "secondary.bin";
// Slot 0's image as it was delivered, kept when MCUboot transformed it (decrypted, decompressed) at the
// swap: MCUboot re-encrypts an image it moves back to slot 1, and a manifest names the delivered image.
constexpr const char* primary_stored_file = "primary.stored";

Body rc_error(int code) { return smp::error_body(code); }
Body group_error(int code) { return smp::group_error_body(smp::group::kiln_provisioning, code); }

std::string hex_or_empty(const Bytes& b) { return to_hex(b); }

// A slot file that does not exist yet hashes as empty.
Bytes file_sha256(const fs::path& path) {
  return fs::exists(path) ? file_digest(HashAlg::sha256, path) : digest(HashAlg::sha256, ByteView{});
}

// What a board reads of a slot file that may not exist yet: nothing when it is absent.
Bytes file_range(const fs::path& path, std::uint64_t offset, std::size_t n) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return {};
  return read_file_range(path, offset, n);
}

Bytes file_head(const fs::path& path, std::size_t n) { return file_range(path, 0, n); }

std::uint64_t file_size_or_zero(const fs::path& path) {
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  return ec ? 0 : size;
}

}  // namespace

std::optional<McubootHeaderFields> read_mcuboot_header(ByteView bytes) {
  if (bytes.size() < 32 || get_le32(bytes, 0) != mcuboot_magic) return std::nullopt;
  McubootHeaderFields h;
  h.header_size = get_le16(bytes, 8);
  h.image_size = get_le32(bytes, 12);
  std::uint32_t build = get_le32(bytes, 24);
  h.version = fmt::format("{}.{}.{}", bytes[20], bytes[21], get_le16(bytes, 22));
  if (build != 0) h.version += fmt::format(".{}", build);
  return h;
}

Bytes make_test_image(std::uint8_t major, std::uint8_t minor, std::uint16_t revision, std::size_t payload_size) {
  Bytes image;
  put_le32(image, mcuboot_magic);
  put_le32(image, 0);       // load address
  put_le16(image, 32);      // header size
  put_le16(image, 0);       // protected TLV size
  put_le32(image, static_cast<std::uint32_t>(payload_size));
  put_le32(image, 0);       // flags
  image.push_back(major);
  image.push_back(minor);
  put_le16(image, revision);
  put_le32(image, 0);       // build
  put_le32(image, 0);       // pad
  for (std::size_t i = 0; i < payload_size; ++i) image.push_back(static_cast<std::uint8_t>(i * 31 + major));
  return image;
}

namespace {

// Slot 1's mark as the state file keeps it: none, test or permanent; anything else is a file this emulator
// cannot read (never read as some other mark).
ImageMark pending_mark(const std::string& text) {
  auto mark = parse_image_mark(text);
  if (!mark || *mark == ImageMark::confirmed)
    throw Error(ExitCode::failure, fmt::format("board state file: pending '{}' is not none, test or permanent", text));
  return *mark;
}

}  // namespace

struct Board::State {
  std::string uid;
  int index = 0;
  ManufacturingState manufacturing = ManufacturingState::blank;
  bool primary_confirmed = true;
  ImageMark pending = ImageMark::none;  // secondary slot: none, test or permanent
  bool swap_in_progress = false;
  Bytes primary_hash;
  Bytes secondary_hash;  // empty unless the secondary slot holds a complete upload
  bool upload_active = false;
  std::uint64_t upload_len = 0;
  Bytes upload_sha;
  std::optional<std::string> key_origin;
  std::vector<Bytes> chain;
  ServiceConfig config;
  FirmwareRecord firmware;            // installed firmware record (64:8 or the update agent)
  FirmwareRecord previous_firmware;   // the record before the last agent update (for a revert)
  // Slot 1 holds an image MCUboot already decrypted (the one a swap moved out of slot 0): not decrypted again.
  bool secondary_plain = false;
  std::string last_boot_refusal;  // why the last pending image was not swapped in
  // The boot-key set (config.boot_key_hash is its first member, as 64:3 installed it) and the trust update
  // state: the product the first accepted update bound the board to, and the installed trust version.
  std::vector<Bytes> boot_key_hashes;
  std::string trust_product;
  std::uint64_t trust_version = 0;

  nlohmann::json to_json() const {
    nlohmann::json chain_hex = nlohmann::json::array();
    for (const auto& c : chain) chain_hex.push_back(to_hex(c));
    nlohmann::json j{{"uid", uid},
                     {"index", index},
                     {"manufacturing_state", std::string(manufacturing_state_name(manufacturing))},
                     {"primary_confirmed", primary_confirmed},
                     {"pending", image_mark_name(pending)},
                     {"swap_in_progress", swap_in_progress},
                     {"primary_hash", hex_or_empty(primary_hash)},
                     {"secondary_hash", hex_or_empty(secondary_hash)},
                     {"upload_active", upload_active},
                     {"upload_len", upload_len},
                     {"upload_sha", hex_or_empty(upload_sha)},
                     {"chain", chain_hex}};
    if (key_origin) j["key_origin"] = *key_origin;
    if (config.boot_key_hash) j["boot_key_hash"] = to_hex(*config.boot_key_hash);
    if (config.service_url) j["service_url"] = *config.service_url;
    if (config.trust_anchor_pem) j["trust_anchor"] = *config.trust_anchor_pem;
    if (!config.manifest_keys.empty()) {
      nlohmann::json keys = nlohmann::json::array();
      for (const auto& key : config.manifest_keys) keys.push_back(to_hex(key));
      j["manifest_keys"] = keys;
      j["manifest_threshold"] = config.manifest_threshold;
    }
    j["sequence"] = firmware.sequence;
    j["manifest_digest"] = to_hex(firmware.manifest_digest);
    j["previous_sequence"] = previous_firmware.sequence;
    j["previous_manifest_digest"] = to_hex(previous_firmware.manifest_digest);
    j["secondary_plain"] = secondary_plain;
    j["last_boot_refusal"] = last_boot_refusal;
    nlohmann::json hashes = nlohmann::json::array();
    for (const auto& hash : boot_key_hashes) hashes.push_back(to_hex(hash));
    j["boot_key_hashes"] = hashes;
    j["trust_product"] = trust_product;
    j["trust_version"] = trust_version;
    return j;
  }

  static State from_json(const nlohmann::json& j) {
    State s;
    s.uid = j.at("uid").get<std::string>();
    s.index = j.value("index", 0);
    s.manufacturing = parse_manufacturing_state(j.at("manufacturing_state").get<std::string>());
    s.primary_confirmed = j.value("primary_confirmed", true);
    s.pending = pending_mark(j.value("pending", image_mark_name(ImageMark::none)));
    s.swap_in_progress = j.value("swap_in_progress", false);
    s.primary_hash = from_hex(j.value("primary_hash", ""));
    s.secondary_hash = from_hex(j.value("secondary_hash", ""));
    s.upload_active = j.value("upload_active", false);
    s.upload_len = j.value("upload_len", std::uint64_t{0});
    s.upload_sha = from_hex(j.value("upload_sha", ""));
    if (j.contains("key_origin")) s.key_origin = j["key_origin"].get<std::string>();
    for (const auto& c : j.value("chain", nlohmann::json::array())) s.chain.push_back(from_hex(c.get<std::string>()));
    if (j.contains("boot_key_hash")) s.config.boot_key_hash = from_hex(j["boot_key_hash"].get<std::string>());
    if (j.contains("service_url")) s.config.service_url = j["service_url"].get<std::string>();
    if (j.contains("trust_anchor")) s.config.trust_anchor_pem = j["trust_anchor"].get<std::string>();
    for (const auto& key : j.value("manifest_keys", nlohmann::json::array()))
      s.config.manifest_keys.push_back(from_hex(key.get<std::string>()));
    s.config.manifest_threshold = j.value("manifest_threshold", std::uint64_t{1});
    if (j.contains("manifest_key")) {  // a state file from before M of N: one key, 1 of 1
      s.config.manifest_keys = {from_hex(j["manifest_key"].get<std::string>())};
      s.config.manifest_threshold = 1;
    }
    s.firmware.sequence = j.value("sequence", std::uint64_t{0});
    s.firmware.manifest_digest = from_hex(j.value("manifest_digest", ""));
    s.previous_firmware.sequence = j.value("previous_sequence", std::uint64_t{0});
    s.previous_firmware.manifest_digest = from_hex(j.value("previous_manifest_digest", ""));
    s.secondary_plain = j.value("secondary_plain", false);
    s.last_boot_refusal = j.value("last_boot_refusal", "");
    for (const auto& hash : j.value("boot_key_hashes", nlohmann::json::array()))
      s.boot_key_hashes.push_back(from_hex(hash.get<std::string>()));
    // A state file from before trust updates: the one boot-key hash is the set.
    if (s.boot_key_hashes.empty() && s.config.boot_key_hash) s.boot_key_hashes = {*s.config.boot_key_hash};
    s.trust_product = j.value("trust_product", "");
    s.trust_version = j.value("trust_version", std::uint64_t{0});
    return s;
  }
};

Board::Board(fs::path dir, const VendorRoot& root, BoardOptions options)
    : dir_(std::move(dir)),
      options_(options),
      state_(std::make_unique<State>(State::from_json(nlohmann::json::parse(read_text_file(dir_ / "state.json"))))),
      uid_(state_->uid),
      index_(state_->index),
      secure_element_(dir_, uid_, root) {}

Board::~Board() {
  if (secondary_fd_ >= 0) ::close(secondary_fd_);
}

std::unique_ptr<Board> Board::open(const fs::path& board_dir, const VendorRoot& root, BoardOptions options) {
  if (!fs::exists(board_dir / "state.json"))
    throw Error(ExitCode::not_found, fmt::format("{} holds no emulated board", board_dir.string()));
  std::unique_ptr<Board> board(new Board(board_dir, root, options));
  if (!fs::exists(board_dir / primary_file)) {
    write_file_atomic(board_dir / primary_file, make_test_image(1, 0, 0, 4096));
    board->state_->primary_hash = file_sha256(board_dir / primary_file);
    board->save();
  }
  board->boot();
  return board;
}

std::unique_ptr<Board> Board::create(const fs::path& emu_dir, const VendorRoot& root, BoardOptions options, int index) {
  std::uint8_t raw[8];
  if (RAND_bytes(raw, sizeof raw) != 1) throw Error(ExitCode::failure, "no randomness for a board UID");
  State state;
  state.uid = to_hex(ByteView(raw, sizeof raw));
  state.index = index;
  fs::create_directories(emu_dir / state.uid);
  write_file_atomic(emu_dir / state.uid / "state.json", as_bytes(state.to_json().dump(2)));
  return open(emu_dir / state.uid, root, options);
}

void Board::save() { write_file_atomic(dir_ / "state.json", as_bytes(state_->to_json().dump(2))); }

ManufacturingState Board::manufacturing_state() const { return state_->manufacturing; }

std::string Board::primary_version() const {
  auto h = read_mcuboot_header(file_head(dir_ / primary_file, 32));
  return h ? h->version : "";
}

void Board::write_flash(int fd, ByteView data) {
  std::size_t allowed = data.size();
  bool lose_power = false;
  if (options_.power_loss_at && flash_written_ + data.size() >= *options_.power_loss_at) {
    allowed = static_cast<std::size_t>(*options_.power_loss_at - std::min(flash_written_, *options_.power_loss_at));
    lose_power = true;
  }
  std::size_t done = 0;
  while (done < allowed) {
    ssize_t n = ::write(fd, data.data() + done, allowed - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error(ExitCode::failure, fmt::format("emulated flash write failed: {}", std::strerror(errno)));
    done += static_cast<std::size_t>(n);
  }
  flash_written_ += allowed;
  if (lose_power) throw PowerLoss();
}

void Board::copy_slot(const fs::path& from, const fs::path& to) {
  int out = ::open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) throw Error(ExitCode::failure, fmt::format("cannot write {}: {}", to.string(), std::strerror(errno)));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{out};
  if (!fs::exists(from)) return;
  ChunkReader reader(from, 64 * 1024);
  for (auto chunk = reader.next(); !chunk.empty(); chunk = reader.next()) write_flash(out, chunk);
}

void Board::boot() {
  std::lock_guard lock(mutex_);
  if (secondary_fd_ >= 0) {
    ::close(secondary_fd_);
    secondary_fd_ = -1;
  }
  const auto primary = dir_ / primary_file;
  const auto secondary = dir_ / secondary_file;
  const auto primary_new = dir_ / "primary.swap";
  const auto secondary_new = dir_ / "secondary.swap";
  if (state_->swap_in_progress) {
    // Power was lost mid-swap: the slots were never replaced, so the old image boots and the
    // pending request is dropped (the host must mark the image again).
    fs::remove(primary_new);
    fs::remove(secondary_new);
    fs::remove(dir_ / "secondary.plain");  // a decrypted copy of the image being swapped in
    fs::remove(dir_ / "primary.stored.swap");
    state_->swap_in_progress = false;
    state_->pending = ImageMark::none;
    save();
    return;
  }
  bool swap_in = state_->pending != ImageMark::none && !state_->secondary_hash.empty() &&
                 read_mcuboot_header(file_head(secondary, 32)).has_value();
  bool revert = !swap_in && !state_->primary_confirmed;
  if (!swap_in && !revert) {
    if (state_->pending != ImageMark::none) {  // nothing bootable to swap in
      state_->pending = ImageMark::none;
      save();
    }
    return;
  }
  // MCUboot decrypts an encrypted image while it copies it into slot 0, and decompresses a compressed one
  // (decrypting first), refusing one it cannot open. Slot 1 keeps the image as it was stored there: the
  // decrypted or decompressed copy is made aside.
  const auto installed = dir_ / "secondary.plain";
  bool transformed = false;
  if (!state_->secondary_plain) {
    Bytes head = file_head(secondary, 32);
    auto header = read_mcuboot_header(head);
    std::uint32_t flags = header ? get_le32(head, 16) : 0;
    const bool encrypted = (flags & (mcuboot::flag_encrypted_aes128 | mcuboot::flag_encrypted_aes256)) != 0;
    const bool compressed = (flags & mcuboot::compression_flags) != 0;
    if (encrypted || compressed) {
      // A revert brings back an image this board installed before: checked then, it is not refused now.
      std::optional<std::string> refusal = swap_in ? bootloader_refusal(secondary) : std::nullopt;
      if (!refusal) {
        try {
          auto opener = encryption_key_opener();
          if (compressed) {
            mcuboot::decompress_image(secondary, installed, encrypted ? opener.get() : nullptr);
            transformed = true;
          } else if (opener) {
            mcuboot::decrypt_image(secondary, installed, *opener);
            transformed = true;
          }
        } catch (const Error& e) {
          // A --clear image (encryption flags, plaintext body) passed the check as it is stored: copied as it is.
          if (compressed) {
            try {
              mcuboot::decompress_image(secondary, installed, nullptr);
              transformed = true;
            } catch (const Error&) {
              refusal = e.what();
            }
          } else if (!mcuboot::inspect_image(secondary, std::nullopt).hash_ok) {
            refusal = e.what();
          }
        }
      }
      if (refusal && swap_in) {
        fs::remove(installed);
        state_->last_boot_refusal = *refusal;
        state_->pending = ImageMark::none;
        save();
        if (!state_->primary_confirmed) {  // a test image was running: MCUboot still reverts it
          swap_in = false;
          revert = true;
        } else {
          return;
        }
      }
    }
  }
  if (swap_in) state_->last_boot_refusal.clear();
  // What goes back to slot 1 is the running image as it was stored: MCUboot re-encrypts an image it
  // decrypted when it moves it back (and a compressed upload is kept as it came).
  const auto primary_stored = dir_ / primary_stored_file;
  const auto primary_stored_new = dir_ / "primary.stored.swap";
  const bool primary_has_stored = fs::exists(primary_stored);
  state_->swap_in_progress = true;
  save();
  copy_slot(transformed ? installed : secondary, primary_new);
  if (transformed) copy_slot(secondary, primary_stored_new);
  copy_slot(primary_has_stored ? primary_stored : primary, secondary_new);
  fs::rename(primary_new, primary);
  fs::rename(secondary_new, secondary);
  if (transformed) {
    fs::rename(primary_stored_new, primary_stored);
    fs::remove(installed);
  } else {
    fs::remove(primary_stored);
  }
  std::swap(state_->primary_hash, state_->secondary_hash);
  // Slot 1 now holds what ran before: as it was delivered (decrypted again when it is swapped back in),
  // or the bytes slot 0 held when it was never transformed.
  state_->secondary_plain = !primary_has_stored;
  state_->primary_confirmed = swap_in ? state_->pending == ImageMark::permanent : true;
  state_->pending = ImageMark::none;
  state_->upload_active = false;
  state_->swap_in_progress = false;
  save();
}

Board::Reply Board::handle_packet(ByteView packet) {
  std::lock_guard lock(mutex_);
  smp::Header header = smp::decode_header(packet);
  if (smp::is_response(header.op)) return {};
  smp::Header response = header;
  response.op = smp::response_op(header.op);
  Body body;
  bool reset_after = false;
  if (packet.size() - smp::header_size != header.length) {
    body = rc_error(smp::rc::invalid);
  } else {
    try {
      body = handle(header, smp::decode_body(packet.subspan(smp::header_size)), reset_after);
    } catch (const PowerLoss&) {
      throw;
    } catch (const Error&) {
      body = rc_error(smp::rc::invalid);
    } catch (const nlohmann::json::exception&) {
      body = rc_error(smp::rc::invalid);
    }
  }
  return {smp::encode_frame(response, body), reset_after};
}

Body Board::handle(const smp::Header& header, const Body& request, bool& reset_after) {
  std::lock_guard lock(mutex_);
  if (header.length > options_.buffer_size) return rc_error(smp::rc::message_too_big);
  switch (header.group) {
    case smp::group::os: return os_group(header, request, reset_after);
    case smp::group::image: return image_group(header, request);
    case smp::group::kiln_provisioning: return provisioning_group(header, request);
    default: return rc_error(smp::rc::not_supported);
  }
}

Body Board::os_group(const smp::Header& header, const Body& request, bool& reset_after) {
  bool write = header.op == smp::Op::write;
  switch (header.command) {
    case os_command::echo:
      if (!write) break;
      return Body{{"r", smp::get_text(request, "d")}};
    case os_command::reset:
      if (!write) break;
      reset_after = true;
      return Body::object();
    case os_command::mcumgr_params:
      return Body{{"buf_size", options_.buffer_size}, {"buf_count", options_.buffer_count}};
    case os_command::info: {
      std::string format = request.value("format", "s");
      std::string out = fmt::format("kiln-board-emu {} {} emulated-mcu", uid_, primary_version());
      if (format == "s") out = "kiln-board-emu";
      return Body{{"output", out}};
    }
    default: break;
  }
  return rc_error(smp::rc::not_supported);
}

Body Board::firmware_list() const {
  Body list = Body::array();
  list.push_back({{"slot", 0}, {"version", primary_version()}, {"hash", smp::binary(state_->primary_hash)}});
  if (!state_->secondary_hash.empty()) {
    auto h = read_mcuboot_header(file_head(dir_ / secondary_file, 32));
    list.push_back({{"slot", 1}, {"version", h ? h->version : ""}, {"hash", smp::binary(state_->secondary_hash)}});
  }
  return list;
}

Body Board::image_state_body() const {
  // What each slot holds: slot 0 what MCUboot wrote (decrypted, decompressed), slot 1 what was delivered.
  auto flags_of = [&](const char* file) {
    Bytes head = file_head(dir_ / file, 32);
    return read_mcuboot_header(head) ? get_le32(head, 16) : 0u;
  };
  const std::uint32_t primary_flags = flags_of(primary_file);
  Body images = Body::array();
  images.push_back({{"image", 0},
                    {"slot", 0},
                    {"version", primary_version()},
                    {"hash", smp::binary(state_->primary_hash)},
                    {"bootable", true},
                    {"pending", false},
                    {"confirmed", state_->primary_confirmed},
                    {"active", true},
                    {"permanent", false},
                    {"encrypted", false},
                    {"compressed", (primary_flags & mcuboot::compression_flags) != 0}});
  if (!state_->secondary_hash.empty()) {
    auto h = read_mcuboot_header(file_head(dir_ / secondary_file, 32));
    images.push_back({{"image", 0},
                      {"slot", 1},
                      {"version", h ? h->version : ""},
                      {"hash", smp::binary(state_->secondary_hash)},
                      {"bootable", h.has_value()},
                      {"pending", state_->pending != ImageMark::none},
                      // The image a revert boots (the running one is on test) is the confirmed one.
                      {"confirmed", !state_->primary_confirmed},
                      {"active", false},
                      {"permanent", state_->pending == ImageMark::permanent}});
    const std::uint32_t flags = flags_of(secondary_file);
    images.back()["encrypted"] = !state_->secondary_plain &&
                                 (flags & (mcuboot::flag_encrypted_aes128 | mcuboot::flag_encrypted_aes256)) != 0;
    images.back()["compressed"] = (flags & mcuboot::compression_flags) != 0;
  }
  return Body{{"images", images}, {"splitStatus", 0}};
}

Body Board::image_group(const smp::Header& header, const Body& request) {
  bool write = header.op == smp::Op::write;
  switch (header.command) {
    case image_command::state: {
      if (!write) return image_state_body();
      bool confirm = request.value("confirm", false);
      auto hash_it = request.find("hash");
      Bytes hash = hash_it != request.end() ? smp::get_bytes(request, "hash") : Bytes{};
      if (hash.empty() || hash == state_->primary_hash) {
        if (!confirm) return rc_error(smp::rc::invalid);  // testing the running image means nothing
        state_->primary_confirmed = true;
      } else if (!state_->secondary_hash.empty() && hash == state_->secondary_hash) {
        state_->pending = confirm ? ImageMark::permanent : ImageMark::test;
      } else {
        return rc_error(smp::rc::no_entry);
      }
      save();
      return image_state_body();
    }
    case image_command::upload:
      if (!write) break;
      return image_upload(request);
    case image_command::erase: {
      if (!write) break;
      std::uint64_t slot = request.contains("slot") ? smp::get_uint(request, "slot") : 1;
      if (slot != 1) return rc_error(smp::rc::access_denied);  // the running slot is not erasable
      if (secondary_in_use()) return rc_error(smp::rc::bad_state);  // the fallback or a pending image
      if (secondary_fd_ >= 0) {
        ::close(secondary_fd_);
        secondary_fd_ = -1;
      }
      fs::remove(dir_ / secondary_file);
      state_->secondary_hash.clear();
      state_->pending = ImageMark::none;
      state_->upload_active = false;
      save();
      return Body::object();
    }
    default: break;
  }
  return rc_error(smp::rc::not_supported);
}

bool Board::secondary_in_use() const {
  return !state_->secondary_hash.empty() && (!state_->primary_confirmed || state_->pending != ImageMark::none);
}

Body Board::image_upload(const Body& request) {
  if (request.value("image", 0) != 0) return rc_error(smp::rc::no_entry);
  std::uint64_t off = smp::get_uint(request, "off");
  Bytes data = smp::get_bytes(request, "data");
  const auto secondary = dir_ / secondary_file;
  std::uint64_t have = file_size_or_zero(secondary);

  if (off == 0) {
    std::uint64_t len = smp::get_uint(request, "len");
    Bytes sha = request.contains("sha") ? smp::get_bytes(request, "sha") : Bytes{};
    if (len == 0 || len > options_.slot_size) return rc_error(smp::rc::no_memory);
    if (state_->upload_active && len == state_->upload_len && !sha.empty() && sha == state_->upload_sha && have > 0 &&
        have < len)
      return Body{{"off", have}};  // same image: resume where the last attempt stopped
    if (data.size() < 4 || get_le32(data, 0) != mcuboot_magic) return rc_error(smp::rc::invalid);
    // A new upload truncates slot 1: never while it holds the fallback or a pending image.
    if (secondary_in_use()) return rc_error(smp::rc::bad_state);
    if (secondary_fd_ >= 0) ::close(secondary_fd_);
    secondary_fd_ = ::open(secondary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (secondary_fd_ < 0) return rc_error(smp::rc::unknown);
    state_->upload_active = true;
    state_->secondary_plain = false;
    state_->upload_len = len;
    state_->upload_sha = sha;
    state_->secondary_hash.clear();
    state_->pending = ImageMark::none;
    save();
    have = 0;
  } else {
    if (!state_->upload_active) return rc_error(smp::rc::bad_state);
    if (off != have) return Body{{"off", have}};  // out of step: tell the host where we are
  }
  if (have + data.size() > state_->upload_len) return rc_error(smp::rc::invalid);
  if (secondary_fd_ < 0) {
    secondary_fd_ = ::open(secondary.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (secondary_fd_ < 0) return rc_error(smp::rc::unknown);
  }
  write_flash(secondary_fd_, data);
  have += data.size();
  Body response{{"off", have}};
  if (have == state_->upload_len) {
    ::close(secondary_fd_);
    secondary_fd_ = -1;
    Bytes actual = file_sha256(secondary);
    state_->upload_active = false;
    if (!state_->upload_sha.empty() && actual != state_->upload_sha) {
      fs::remove(secondary);
      save();
      return rc_error(smp::rc::corrupt);
    }
    // The bootloader must be able to open it: refuse now, with the reason, rather than at the next boot.
    if (auto refusal = bootloader_refusal(secondary)) {
      fs::remove(secondary);
      save();
      Body refused = rc_error(smp::rc::invalid);
      refused["rsn"] = *refusal;
      return refused;
    }
    state_->secondary_hash = actual;
    save();
    response["match"] = true;
  }
  return response;
}

Body Board::provisioning_group(const smp::Header& header, const Body& request) {
  using namespace provisioning_command;
  namespace prc = provisioning_rc;
  bool write = header.op == smp::Op::write;
  State& s = *state_;
  bool blank = s.manufacturing == ManufacturingState::blank;
  switch (header.command) {
    case identity: {
      // A station nonce (16..64 bytes) is answered with the attestation key: a replayed answer
      // to another station's nonce does not verify.
      Bytes nonce;
      if (request.contains("nonce")) {
        nonce = smp::get_bytes(request, "nonce");
        if (nonce.size() < min_nonce_size || nonce.size() > max_nonce_size) return group_error(prc::invalid_argument);
      }
      Body chain = Body::array();
      for (const auto& cert : secure_element_.attestation_chain()) chain.push_back(smp::binary(cert));
      Body out{{"uid", uid_},
                  {"state", std::string(manufacturing_state_name(s.manufacturing))},
                  {"attestation", chain},
                  {"transport_key", smp::binary(secure_element_.transport_public_key())},
                  {"transport_key_sig", smp::binary(secure_element_.transport_key_signature())},
                  {"firmware", firmware_list()}};
      if (!nonce.empty()) out["attestation_sig"] = smp::binary(secure_element_.attest_identity(nonce));
      add_firmware_record(out);
      return out;
    }
    case generate_key: {
      if (!write) break;
      if (!blank) return group_error(prc::locked);
      std::string cn = request.value("cn", "");
      Bytes nonce;
      if (request.contains("nonce")) {
        nonce = smp::get_bytes(request, "nonce");
        if (nonce.size() < min_nonce_size || nonce.size() > max_nonce_size) return group_error(prc::invalid_argument);
      }
      Bytes csr = secure_element_.generate_device_key(cn);
      s.key_origin = "generated";
      s.chain.clear();
      save();
      Body out{{"csr", smp::binary(csr)}, {"public_key", smp::binary(secure_element_.device_public_key())}};
      // The attestation key vouches that this key was made inside this secure element.
      if (!nonce.empty()) out["key_attestation"] = smp::binary(secure_element_.attest_device_key(nonce));
      return out;
    }
    case install_chain: {
      if (!write) break;
      if (!blank) return group_error(prc::locked);
      if (!secure_element_.has_device_key()) return group_error(prc::no_device_key);
      auto it = request.find("chain");
      if (it == request.end() || !it->is_array() || it->empty()) return group_error(prc::invalid_argument);
      std::vector<Bytes> chain;
      for (const auto& cert : *it) {
        if (!cert.is_binary()) return group_error(prc::invalid_argument);
        chain.emplace_back(cert.get_binary().begin(), cert.get_binary().end());
      }
      // The leaf must certify the key held in the secure element.
      const unsigned char* p = chain.front().data();
      X509* leaf = d2i_X509(nullptr, &p, static_cast<long>(chain.front().size()));
      if (!leaf) return group_error(prc::chain_mismatch);
      int len = i2d_PUBKEY(X509_get0_pubkey(leaf), nullptr);
      Bytes leaf_key(static_cast<std::size_t>(len > 0 ? len : 0));
      unsigned char* q = leaf_key.data();
      if (len > 0) i2d_PUBKEY(X509_get0_pubkey(leaf), &q);
      X509_free(leaf);
      if (leaf_key != secure_element_.device_public_key()) return group_error(prc::chain_mismatch);
      s.chain = std::move(chain);
      save();
      return Body::object();
    }
    case install_config: {
      if (!write) break;
      if (s.manufacturing == ManufacturingState::device_complete) return group_error(prc::locked);
      ServiceConfig config = s.config;
      if (request.contains("boot_key_hash")) {
        Bytes hash = smp::get_bytes(request, "boot_key_hash");
        if (hash.size() != 32) return group_error(prc::invalid_argument);
        config.boot_key_hash = hash;
      }
      if (request.contains("service_url")) {
        std::string url = smp::get_text(request, "service_url");
        if (url.rfind("https://", 0) != 0) return group_error(prc::invalid_argument);
        config.service_url = url;
      }
      if (request.contains("trust_anchor")) {
        std::string pem = smp::get_text(request, "trust_anchor");
        if (pem.find("-----BEGIN CERTIFICATE-----") == std::string::npos) return group_error(prc::invalid_argument);
        config.trust_anchor_pem = pem;
      }
      // The SUIT signers the board accepts updates from: one `manifest_key` (1 of 1), or `manifest_keys` and
      // `manifest_threshold` M (M of N). Never an empty set, a key twice, or M outside 1..N.
      if (request.contains("manifest_key") && request.contains("manifest_keys"))
        return group_error(prc::invalid_argument);
      if (request.contains("manifest_threshold") && !request.contains("manifest_keys"))
        return group_error(prc::invalid_argument);
      if (request.contains("manifest_key")) {
        Bytes der = smp::get_bytes(request, "manifest_key");
        if (!acceptable_manifest_key(der)) return group_error(prc::invalid_argument);
        config.manifest_keys = {der};
        config.manifest_threshold = 1;
      }
      if (request.contains("manifest_keys")) {
        const auto& keys = request["manifest_keys"];
        if (!keys.is_array() || keys.empty()) return group_error(prc::invalid_argument);
        std::vector<Bytes> set;
        for (const auto& key : keys) {
          if (!key.is_binary()) return group_error(prc::invalid_argument);
          Bytes der(key.get_binary().begin(), key.get_binary().end());
          if (!acceptable_manifest_key(der) || std::find(set.begin(), set.end(), der) != set.end())
            return group_error(prc::invalid_argument);
          set.push_back(std::move(der));
        }
        const auto threshold = request.find("manifest_threshold");
        std::uint64_t m = 1;
        if (threshold != request.end()) {
          if (!threshold->is_number_unsigned()) return group_error(prc::invalid_argument);
          m = threshold->get<std::uint64_t>();
        } else if (set.size() > 1) {
          return group_error(prc::invalid_argument);  // several keys: the threshold must be said
        }
        if (m < 1 || m > set.size()) return group_error(prc::invalid_argument);
        config.manifest_keys = std::move(set);
        config.manifest_threshold = m;
      }
      s.config = config;
      if (request.contains("boot_key_hash")) s.boot_key_hashes = {*config.boot_key_hash};  // the factory's set
      save();
      return Body::object();
    }
    case inject_key: {
      if (!write) break;
      if (!blank) return group_error(prc::locked);
      WrappedKey wrapped{smp::get_bytes(request, "epk"), smp::get_bytes(request, "iv"), smp::get_bytes(request, "ct"),
                         smp::get_bytes(request, "tag")};
      Bytes public_key;
      try {
        public_key = secure_element_.inject_device_key(wrapped);
      } catch (const Error&) {
        return group_error(prc::unwrap_failed);
      }
      s.key_origin = "injected";
      s.chain.clear();
      save();
      return Body{{"public_key", smp::binary(public_key)}};
    }
    case provisioning_command::generate_encryption_key: {
      if (!write) break;
      if (!blank) return group_error(prc::locked);
      std::string type = request.value("type", "ecies-p256");
      mcuboot::EncryptionKeyKind kind;
      if (type == "ecies-p256") kind = mcuboot::EncryptionKeyKind::ecies_p256;
      else if (type == "ecies-x25519") kind = mcuboot::EncryptionKeyKind::ecies_x25519;
      else if (type == "rsa-oaep-2048") kind = mcuboot::EncryptionKeyKind::rsa_oaep_2048;
      else return group_error(prc::invalid_argument);
      return Body{{"public_key", smp::binary(secure_element_.generate_encryption_key(kind))}};
    }
    case provisioning_command::inject_encryption_key: {
      if (!write) break;
      if (!blank) return group_error(prc::locked);
      WrappedKey wrapped{smp::get_bytes(request, "epk"), smp::get_bytes(request, "iv"), smp::get_bytes(request, "ct"),
                         smp::get_bytes(request, "tag")};
      try {
        return Body{{"public_key", smp::binary(secure_element_.inject_encryption_key(wrapped))}};
      } catch (const Error&) {
        return group_error(prc::unwrap_failed);
      }
    }
    case provisioning_command::sign_challenge: {
      if (!write) break;
      if (!secure_element_.has_device_key()) return group_error(prc::no_device_key);
      Bytes challenge = smp::get_bytes(request, "challenge");
      if (challenge.empty() || challenge.size() > 1024) return group_error(prc::invalid_argument);
      return Body{{"signature", smp::binary(secure_element_.sign_with_device_key(challenge))},
                  {"alg", "ES256"},
                  {"key_attestation", smp::binary(secure_element_.attest_device_key(challenge))}};
    }
    case set_state: {
      if (!write) break;
      ManufacturingState next;
      try {
        next = parse_manufacturing_state(smp::get_text(request, "state"));
      } catch (const Error&) {
        return group_error(prc::invalid_argument);
      }
      if (next <= s.manufacturing) return group_error(prc::invalid_transition);
      bool has_identity = secure_element_.has_device_key() && !s.chain.empty();
      bool has_config = s.config.boot_key_hash && s.config.service_url && s.config.trust_anchor_pem;
      if (!has_identity || (next == ManufacturingState::device_complete && !has_config))
        return group_error(prc::precondition);
      Body response{{"previous", std::string(manufacturing_state_name(s.manufacturing))}};
      if (!request.value("dry_run", false)) {
        s.manufacturing = next;
        save();
      }
      response["state"] = std::string(manufacturing_state_name(next));
      response["dry_run"] = request.value("dry_run", false);
      return response;
    }
    case record: {
      Body chain = Body::array();
      for (const auto& cert : s.chain) chain.push_back(smp::binary(cert));
      Body out{{"uid", uid_}, {"state", std::string(manufacturing_state_name(s.manufacturing))}};
      if (s.key_origin) out["key_origin"] = *s.key_origin;
      if (secure_element_.has_device_key()) out["public_key"] = smp::binary(secure_element_.device_public_key());
      out["chain"] = chain;
      if (s.config.boot_key_hash) out["boot_key_hash"] = smp::binary(*s.config.boot_key_hash);
      if (s.config.service_url) out["service_url"] = *s.config.service_url;
      if (s.config.trust_anchor_pem) out["trust_anchor"] = *s.config.trust_anchor_pem;
      if (secure_element_.has_encryption_key())
        out["encryption_key"] = smp::binary(secure_element_.encryption_public_key());
      add_firmware_record(out);
      return out;
    }
    case provisioning_command::install_manifest:
      if (!write) break;
      return install_manifest(request);
    default: break;
  }
  return rc_error(smp::rc::not_supported);
}

void Board::add_firmware_record(Body& body) const {
  const ServiceConfig& config = state_->config;
  if (!config.manifest_keys.empty()) {
    // `manifest_key` as before M of N when the board trusts one key, 1 of 1.
    if (config.manifest_keys.size() == 1 && config.manifest_threshold == 1)
      body["manifest_key"] = smp::binary(config.manifest_keys.front());
    Body keys = Body::array();
    for (const auto& key : config.manifest_keys) keys.push_back(smp::binary(key));
    body["manifest_keys"] = keys;
    body["manifest_threshold"] = config.manifest_threshold;
  }
  body["sequence"] = state_->firmware.sequence;
  if (!state_->firmware.manifest_digest.empty()) body["manifest_digest"] = smp::binary(state_->firmware.manifest_digest);
  Body hashes = Body::array();
  for (const auto& hash : state_->boot_key_hashes) hashes.push_back(smp::binary(hash));
  body["boot_key_hashes"] = hashes;
  body["trust_version"] = state_->trust_version;
  if (!state_->trust_product.empty()) body["trust_product"] = state_->trust_product;
}

Body Board::install_manifest(const Body& request) {
  Bytes envelope = smp::get_bytes(request, "envelope");
  State& s = *state_;
  if (s.config.manifest_keys.empty()) return group_error(provisioning_rc::no_manifest_key);
  // The manifest describes the image that runs: the pending one when an update waits in slot 1.
  bool pending = s.pending != ImageMark::none && !s.secondary_hash.empty();
  UpdateCheckInput input;
  input.envelope = envelope;
  input.manifest_keys = s.config.manifest_keys;
  input.manifest_threshold = s.config.manifest_threshold;
  // Slot 0's image as it was delivered, when MCUboot decrypted or decompressed it at the swap: the
  // manifest declares the delivered image.
  const bool stored = !pending && fs::exists(dir_ / primary_stored_file);
  input.image = dir_ / (pending ? secondary_file : stored ? primary_stored_file : primary_file);
  input.installed_sequence = s.firmware.sequence;
  input.allow_same_sequence = true;
  auto opener = secure_element_.encryption_key_opener();
  input.decrypt = opener.get();
  input.body_decrypted = pending ? s.secondary_plain : !stored;  // slot 0 holds what the bootloader decrypted
  UpdateCheckResult result = check_update(input);
  if (!result.ok()) {
    Body out = group_error(provisioning_rc::manifest_refused);
    out["reason"] = fmt::format("{}: {}", result.failed_check, result.reason);
    return out;
  }
  s.firmware = FirmwareRecord{result.sequence, result.envelope_digest};
  save();
  return Body{{"sequence", result.sequence}, {"digest", smp::binary(result.envelope_digest)}};
}

AgentView Board::agent_view() const {
  std::lock_guard lock(mutex_);
  AgentView v;
  v.state = state_->manufacturing;
  v.has_device_key = secure_element_.has_device_key();
  v.chain = state_->chain;
  v.config = state_->config;
  v.current = state_->firmware;
  v.previous = state_->previous_firmware;
  v.version = primary_version();
  v.primary_hash = state_->primary_hash;
  v.primary_confirmed = state_->primary_confirmed;
  v.slot_size = options_.slot_size;
  v.has_encryption_key = secure_element_.has_encryption_key();
  v.last_boot_refusal = state_->last_boot_refusal;
  v.boot_key_hashes = state_->boot_key_hashes;
  v.trust_version = state_->trust_version;
  return v;
}

trust::TrustState Board::trust_state() const {
  std::lock_guard lock(mutex_);
  const State& s = *state_;
  return trust::TrustState{s.trust_product, s.trust_version, s.config.manifest_keys, s.config.manifest_threshold,
                           s.boot_key_hashes};
}

trust::Decision Board::apply_trust_update(ByteView update) {
  std::lock_guard lock(mutex_);
  trust::Decision decision = trust::check(update, trust_state());
  if (!decision.ok()) return decision;
  State& s = *state_;
  trust::TrustState next = trust::apply(decision.update);
  s.trust_product = next.product;
  s.trust_version = next.version;
  s.config.manifest_keys = next.manifest_keys;
  s.config.manifest_threshold = next.manifest_threshold;
  s.boot_key_hashes = next.boot_key_hashes;
  s.config.boot_key_hash = next.boot_key_hashes.front();
  save();
  return decision;
}

void Board::stage_test_image(const fs::path& image) {
  std::lock_guard lock(mutex_);
  if (secondary_fd_ >= 0) {
    ::close(secondary_fd_);
    secondary_fd_ = -1;
  }
  const auto secondary = dir_ / secondary_file;
  state_->upload_active = false;
  state_->secondary_hash.clear();
  state_->pending = ImageMark::none;
  save();
  copy_slot(image, secondary);
  state_->secondary_plain = false;
  state_->last_boot_refusal.clear();
  state_->secondary_hash = file_sha256(secondary);
  state_->pending = ImageMark::test;
  save();
}

void Board::reset() { boot(); }

void Board::factory_install_encryption_key(const fs::path& pem) {
  std::lock_guard lock(mutex_);
  auto key = load_private_key_file(pem, std::nullopt);
  int length = i2d_PrivateKey(key.get(), nullptr);
  if (length <= 0) throw Error(ExitCode::usage, fmt::format("{} holds no private key kiln can encode", pem.string()));
  Bytes der(static_cast<std::size_t>(length));
  unsigned char* p = der.data();
  i2d_PrivateKey(key.get(), &p);
  struct Wipe {
    Bytes& b;
    ~Wipe() { OPENSSL_cleanse(b.data(), b.size()); }
  } wipe{der};
  try {
    secure_element_.install_encryption_key(der);
  } catch (const Error& e) {
    throw Error(ExitCode::usage, fmt::format("{}: {}", pem.string(), e.what()), e.hint());
  }
}

std::unique_ptr<mcuboot::ContentKeyOpener> Board::encryption_key_opener() const {
  return secure_element_.encryption_key_opener();
}

std::optional<std::string> Board::bootloader_refusal(const fs::path& path) const {
  Bytes head = file_head(path, 32);
  if (head.size() < 32 || get_le32(head, 0) != mcuboot_magic) return std::nullopt;
  std::uint32_t flags = get_le32(head, 16);
  const bool encrypted = (flags & (mcuboot::flag_encrypted_aes128 | mcuboot::flag_encrypted_aes256)) != 0;
  const bool compressed = (flags & mcuboot::compression_flags) != 0;
  if (!encrypted && !compressed) return std::nullopt;
  try {
    std::unique_ptr<mcuboot::ContentKeyOpener> opener;
    if (encrypted) {
      opener = secure_element_.encryption_key_opener();
      if (!opener) return std::string("the image is encrypted and this board holds no image-encryption key");
    }
    if (compressed) {
      // DECOMP_SIZE bounds the decompression: never more than the slot holds.
      auto header = mcuboot::parse_header(head);
      std::uint64_t tlv_at = std::uint64_t{header.header_size} + header.image_size;
      auto parsed = mcuboot::parse_tlv_areas(header, file_range(path, tlv_at, 2 * 0xffff));
      std::optional<std::uint32_t> size;
      if (parsed.protected_area)
        for (const auto& e : parsed.protected_area->entries)
          if (e.type == mcuboot::tlv::decomp_size && e.value.size() == 4) size = get_le32(e.value, 0);
      if (!size) return std::string("the image is compressed but names no DECOMP_SIZE");
      if (*size > options_.slot_size)
        return fmt::format("the image decompresses to {} bytes, more than the {}-byte slot", *size, options_.slot_size);
    }
    mcuboot::ImageReport report = mcuboot::inspect_image(path, std::nullopt, {}, opener.get());
    if (!report.ok()) return report.failure;
    if (encrypted && !report.hash_ok) return std::string("the image's hash does not match its decrypted payload");
  } catch (const Error& e) {
    return std::string(e.what());
  }
  return std::nullopt;
}

void Board::confirm_running() {
  std::lock_guard lock(mutex_);
  state_->primary_confirmed = true;
  save();
}

void Board::record_firmware(FirmwareRecord record) {
  std::lock_guard lock(mutex_);
  state_->previous_firmware = state_->firmware;
  state_->firmware = std::move(record);
  save();
}

}  // namespace kiln::emu
