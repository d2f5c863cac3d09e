// OS and Image group calls, including the windowed, resumable image upload.
#include "transport/board_api.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include <fmt/format.h>

#include "core/error.hpp"
#include "core/name_table.hpp"
#include "core/interrupt.hpp"
#include "signing/mcuboot_image.hpp"
#include "signing/signer.hpp"

namespace kiln {
namespace {

SmpRequest request(smp::Op op, std::uint16_t group, std::uint8_t command, smp::Body body = smp::Body::object()) {
  return SmpRequest{op, group, command, std::move(body)};
}

Error unknown_state(const std::string& board, const std::string& what) {
  return Error(ExitCode::board, fmt::format("protocol error: board {} reports an image slot state kiln does not know: {}",
                                            board, what),
               "the board's firmware speaks another version of the MCUmgr image group; update kiln or the firmware");
}

// A slot flag: absent is false, anything but a boolean is a state kiln cannot interpret.
bool flag(const std::string& board, const smp::Body& entry, const char* key) {
  auto it = entry.find(key);
  if (it == entry.end()) return false;
  if (!it->is_boolean()) throw unknown_state(board, fmt::format("{} = {}", key, it->dump(-1, ' ', true, smp::Body::error_handler_t::replace)));
  return it->get<bool>();
}

std::vector<ImageSlot> parse_image_state(const std::string& board, const smp::Body& body) {
  std::vector<ImageSlot> slots;
  auto images = body.find("images");
  if (images == body.end() || !images->is_array()) throw unknown_state(board, "no images list");
  for (const auto& entry : *images) {
    if (!entry.is_object()) throw unknown_state(board, "an images entry that is not a map");
    ImageSlot slot;
    slot.image = entry.contains("image") ? static_cast<std::uint32_t>(smp::get_uint(entry, "image")) : 0;
    std::uint64_t number = smp::get_uint(entry, "slot");
    if (number > 1) throw unknown_state(board, fmt::format("slot {} (MCUboot images have slots 0 and 1)", number));
    slot.slot = static_cast<std::uint32_t>(number);
    slot.version = entry.contains("version") ? smp::get_text(entry, "version") : "";
    if (entry.contains("hash")) slot.hash = smp::get_bytes(entry, "hash");
    slot.bootable = flag(board, entry, "bootable");
    slot.pending = flag(board, entry, "pending");
    slot.confirmed = flag(board, entry, "confirmed");
    slot.active = flag(board, entry, "active");
    slot.permanent = flag(board, entry, "permanent");
    if (entry.contains("encrypted")) slot.encrypted = flag(board, entry, "encrypted");
    if (entry.contains("compressed")) slot.compressed = flag(board, entry, "compressed");
    slots.push_back(std::move(slot));
  }
  return slots;
}

// A file read at arbitrary offsets (uploads resume mid-file).
class FileAtOffset {
 public:
  explicit FileAtOffset(const std::filesystem::path& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0)
      throw Error(errno == ENOENT ? ExitCode::not_found : ExitCode::failure,
                  fmt::format("cannot open {}: {}", path.string(), std::strerror(errno)));
    struct stat st {};
    ::fstat(fd_, &st);
    size_ = static_cast<std::uint64_t>(st.st_size);
  }
  ~FileAtOffset() { ::close(fd_); }
  FileAtOffset(const FileAtOffset&) = delete;
  FileAtOffset& operator=(const FileAtOffset&) = delete;
  std::uint64_t size() const { return size_; }
  Bytes read(std::uint64_t offset, std::size_t length) const {
    Bytes out(length);
    std::size_t got = 0;
    while (got < length) {
      ssize_t n = ::pread(fd_, out.data() + got, length - got, static_cast<off_t>(offset + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw Error(ExitCode::failure, fmt::format("cannot read {}: file changed during upload", path_.string()));
      got += static_cast<std::size_t>(n);
    }
    return out;
  }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

Bytes file_sha256(const FileAtOffset& file) {
  Hasher hasher(HashAlg::sha256);
  constexpr std::size_t step = 1 << 20;
  for (std::uint64_t off = 0; off < file.size(); off += step)
    hasher.update(file.read(off, static_cast<std::size_t>(std::min<std::uint64_t>(step, file.size() - off))));
  return hasher.finish();
}

}  // namespace

std::string echo(SmpClient& client, const std::string& text) {
  auto rsp = client.call(request(smp::Op::write, smp::group::os, os_command::echo, {{"d", text}}));
  return smp::get_text(rsp, "r");
}

void reset_board(SmpClient& client) { client.call(request(smp::Op::write, smp::group::os, os_command::reset)); }

McumgrParams read_mcumgr_params(SmpClient& client) {
  auto rsp = client.call(request(smp::Op::read, smp::group::os, os_command::mcumgr_params));
  return {static_cast<std::uint32_t>(smp::get_uint(rsp, "buf_size")),
          static_cast<std::uint32_t>(smp::get_uint(rsp, "buf_count"))};
}

std::string read_os_info(SmpClient& client, const std::string& format) {
  auto rsp = client.call(request(smp::Op::read, smp::group::os, os_command::info, {{"format", format}}));
  return smp::get_text(rsp, "output");
}

namespace {

constexpr NameTable<ImageMark, 4> image_mark_names{{
    {ImageMark::none, "none"},
    {ImageMark::test, "test"},
    {ImageMark::permanent, "permanent"},
    {ImageMark::confirmed, "confirmed"},
}};

}  // namespace

std::string image_mark_name(ImageMark mark) { return std::string(name_in(image_mark_names, mark)); }

std::optional<ImageMark> parse_image_mark(std::string_view text) { return value_in(image_mark_names, text); }

ImageMark install_mark(const InstallResult& result, bool confirm) {
  if (result.already_running) return confirm ? ImageMark::confirmed : ImageMark::none;
  return confirm ? ImageMark::permanent : ImageMark::test;
}

std::vector<ImageSlot> read_image_state(SmpClient& client) {
  return parse_image_state(client.board(),
                           client.call(request(smp::Op::read, smp::group::image, image_command::state)));
}

std::vector<ImageSlot> write_image_state(SmpClient& client, ByteView hash, bool confirm) {
  smp::Body body{{"confirm", confirm}};
  if (!hash.empty()) body["hash"] = smp::binary(hash);
  return parse_image_state(client.board(),
                           client.call(request(smp::Op::write, smp::group::image, image_command::state, body)));
}

void erase_slot(SmpClient& client, std::uint32_t slot) {
  client.call(request(smp::Op::write, smp::group::image, image_command::erase, {{"slot", slot}}));
}

UploadResult upload_image(SmpClient& client, const std::filesystem::path& path, const UploadOptions& options,
                          const UploadProgress& progress) {
  auto started = std::chrono::steady_clock::now();
  FileAtOffset file(path);
  if (file.size() == 0) throw Error(ExitCode::usage, fmt::format("{} is empty", path.string()));
  UploadResult result;
  result.size = file.size();
  result.sha256 = file_sha256(file);

  auto params = read_mcumgr_params(client);
  // Room for the header and the CBOR keys around the data (the first packet also carries len and sha).
  constexpr std::size_t packet_overhead = 8 + 96;
  if (params.buffer_size <= packet_overhead + 16)
    throw Error(ExitCode::board, fmt::format("board {} reports an SMP buffer of only {} bytes", client.board(),
                                             params.buffer_size));
  std::size_t chunk = params.buffer_size - packet_overhead;
  if (options.chunk_size != 0) chunk = std::min(chunk, options.chunk_size);
  std::size_t window = std::min<std::size_t>(client.window(), std::max<std::uint32_t>(1, params.buffer_count));

  auto chunk_request = [&](std::uint64_t offset) {
    auto length = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, file.size() - offset));
    smp::Body body{{"image", options.image}, {"off", offset}};
    if (offset == 0) {
      body["len"] = file.size();
      body["sha"] = smp::binary(result.sha256);
    }
    body["data"] = smp::binary(file.read(offset, length));
    return SmpRequest{smp::Op::write, smp::group::image, image_command::upload, std::move(body)};
  };
  auto board_offset = [&](const SmpRequest& req, const smp::Body& rsp) {
    check_response(client.board(), req, rsp);
    std::uint64_t off = smp::get_uint(rsp, "off");
    if (off > file.size())
      throw Error(ExitCode::board, fmt::format("board {} reports offset {} beyond the image size {}", client.board(),
                                               off, file.size()));
    return off;
  };

  // The first packet opens (or resumes) the upload: the board answers with where it stands.
  auto first = chunk_request(0);
  std::uint64_t acknowledged = board_offset(first, client.call_raw(first));
  ++result.packets;
  if (acknowledged > 0 && acknowledged != std::min<std::uint64_t>(chunk, file.size())) result.resumed_from = acknowledged;
  if (progress) progress(acknowledged, file.size());

  std::deque<std::pair<SmpRequest, std::uint64_t>> pending;  // request and the offset after it
  std::uint64_t next = acknowledged;
  int resyncs = 0;
  while (acknowledged < file.size()) {
    check_interrupted();
    while (pending.size() < window && next < file.size()) {
      auto req = chunk_request(next);
      auto end = next + req.body["data"].get_binary().size();
      req.body.erase("len");  // only the first packet carries len/sha
      req.body.erase("sha");
      client.send(req);
      ++result.packets;
      pending.emplace_back(std::move(req), end);
      next = end;
    }
    auto [req, expected_end] = std::move(pending.front());
    pending.pop_front();
    std::uint64_t off = board_offset(req, client.receive());
    if (off == expected_end) {
      acknowledged = off;
      if (progress) progress(acknowledged, file.size());
      continue;
    }
    // The board holds a different offset (a lost or rejected packet): drain, then continue
    // from whatever the last answer says.
    if (++resyncs > 16)
      throw Error(ExitCode::board, fmt::format("board {} keeps rejecting upload offsets (last {})", client.board(), off));
    while (!pending.empty()) {
      off = board_offset(pending.front().first, client.receive());
      pending.pop_front();
    }
    acknowledged = next = off;
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return result;
}

namespace {

// The hashes a board may report for the image in `path`: the file's SHA-256 (what kiln's
// emulator reports) and, for an MCUboot image, its hash TLV (what MCUboot's img_mgmt reports).
std::vector<Bytes> reported_hashes_of(const std::filesystem::path& path) {
  FileAtOffset file(path);
  std::vector<Bytes> hashes{file_sha256(file)};
  try {
    if (file.size() < mcuboot::header_struct_size) return hashes;
    auto header = mcuboot::parse_header(file.read(0, mcuboot::header_struct_size));
    std::uint64_t tlv_start = std::uint64_t{header.header_size} + header.image_size;
    if (tlv_start >= file.size()) return hashes;
    auto tail = file.read(tlv_start, static_cast<std::size_t>(std::min<std::uint64_t>(file.size() - tlv_start, 1 << 16)));
    auto parsed = mcuboot::parse_tlv_areas(header, tail);
    for (const auto& e : parsed.unprotected_area.entries)
      if (mcuboot::hash_alg_of_tlv(e.type)) hashes.push_back(e.value);
  } catch (const Error&) {
    // Not an MCUboot image kiln can parse: the board can only report the file's SHA-256.
  }
  return hashes;
}

const ImageSlot* find_slot(const std::vector<ImageSlot>& slots, std::uint32_t image, std::uint32_t number) {
  for (const auto& s : slots)
    if (s.image == image && s.slot == number) return &s;
  return nullptr;
}

std::string slot_label(const ImageSlot& slot) {
  return slot.version.empty() ? fmt::format("hash {}", to_hex(slot.hash).substr(0, 16))
                              : fmt::format("{} (hash {}…)", slot.version, to_hex(slot.hash).substr(0, 16));
}

}  // namespace

InstallResult install_image(SmpClient& client, const std::filesystem::path& path, const InstallOptions& options,
                            const UploadProgress& progress) {
  InstallResult result;
  const std::uint32_t image = options.upload.image;
  // What the board runs and holds decides before anything is erased (as MCUboot's img_mgmt, which
  // also refuses): slot 1 may hold the only way back.
  auto before = read_image_state(client);
  const auto hashes = reported_hashes_of(path);
  auto is_this = [&](const ImageSlot* slot) {
    return slot && !slot->hash.empty() && std::find(hashes.begin(), hashes.end(), slot->hash) != hashes.end();
  };
  const ImageSlot* running = find_slot(before, image, 0);
  const ImageSlot* staged = find_slot(before, image, 1);
  if (is_this(running)) {
    // Already running it (e.g. the re-run after a test boot): nothing to upload. --confirm keeps it.
    if (!running->confirmed && options.confirm) write_image_state(client, {}, true);
    result.already_running = true;
    result.slots = read_image_state(client);
    return result;
  }
  if (running && !running->confirmed)
    throw Error(ExitCode::conflict,
                fmt::format("board {} is test-running {}, not confirmed; slot 1 holds the image it reverts to{}, and "
                            "uploading would erase it. Nothing was changed",
                            client.board(), slot_label(*running), staged ? " (" + slot_label(*staged) + ")" : ""),
                "confirm the running image first (kiln board confirm), or reset the board to revert to the previous "
                "image; then upload again");
  if (staged && staged->pending && !is_this(staged))
    throw Error(ExitCode::conflict,
                fmt::format("board {} has {} in slot 1, marked for the next boot; uploading would replace it. Nothing "
                            "was changed",
                            client.board(), slot_label(*staged)),
                "reset the board to boot it (then confirm it, or power-cycle to revert), and upload again");
  if (is_this(staged) && staged->pending) {
    // The same image already waits in slot 1 (a re-run before the reset): mark and reset only.
    result.upload.size = std::filesystem::file_size(path);
    result.upload.resumed_from = result.upload.size;
    result.upload.sha256 = hashes.front();
  } else {
    result.upload = upload_image(client, path, options.upload, progress);
  }
  // Mark by the hash the board reports for its secondary slot (firmware uses MCUboot's image
  // hash TLV, which need not equal the file's SHA-256).
  auto slots = read_image_state(client);
  auto uploaded = std::find_if(slots.begin(), slots.end(), [&](const ImageSlot& s) {
    return s.image == options.upload.image && s.slot == 1 && !s.hash.empty();
  });
  if (uploaded == slots.end())
    throw Error(ExitCode::board, fmt::format("board {} does not list the uploaded image in its secondary slot", client.board()));
  result.slots = write_image_state(client, uploaded->hash, options.confirm);
  if (options.reset) {
    reset_board(client);
    result.reset = true;
  }
  return result;
}

}  // namespace kiln
