// Images: content-addressed by SHA-256 per tenant; resumable chunked upload; download with Range.
#include <fmt/format.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "service/blob_file.hpp"
#include "service/handlers.hpp"
#include "signing/file_digest.hpp"
#include "signing/signer.hpp"

namespace kiln::service {
namespace {

constexpr std::int64_t max_image_size = std::int64_t{1} << 32;

std::string checked_sha(const std::string& text) {
  bool ok = text.size() == 64 && text.find_first_not_of("0123456789abcdef") == std::string::npos;
  if (!ok) throw ApiError{400, "invalid_request", "an image ID is its SHA-256: 64 lower-case hex digits"};
  return text;
}

std::filesystem::path content_path(const Call& call, const std::string& sha, bool partial) {
  auto dir = call.config.image_dir / std::to_string(call.who.tenant_id);
  std::filesystem::create_directories(dir);
  return dir / (sha + (partial ? ".part" : ""));
}

using ImageRow = ImageRecord;

std::optional<ImageRow> find_image(Call& call, const std::string& sha) {
  return call.store.find_image(call.who.tenant_id, sha);
}

Json image_json(const ImageRow& row) {
  return {{"id", row.sha256}, {"name", row.name}, {"size", row.size}, {"received", row.received},
          {"complete", row.complete}, {"created_at", row.created_at}};
}

ImageRow require_image(Call& call, const std::string& sha) {
  auto row = find_image(call, sha);
  if (!row) throw ApiError{404, "not_found", fmt::format("image {} not found", sha)};
  return *row;
}

// The `offset` query parameter of a chunk upload: decimal digits only, no sign, within the largest image.
std::int64_t upload_offset(const Call& call) {
  auto it = call.query.find("offset");
  if (it == call.query.end())
    throw ApiError{400, "invalid_request",
                   "query parameter 'offset' is required: the byte offset this chunk starts at"};
  const std::string& text = it->second;
  std::int64_t value = -1;
  bool digits = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (!digits || error != std::errc{} || end != text.data() + text.size() || value > max_image_size)
    throw ApiError{400, "invalid_request",
                   fmt::format("query parameter 'offset' must be a byte offset in decimal digits (0 .. {}), not '{}'",
                               max_image_size, text.substr(0, 40))};
  return value;
}

std::string file_sha256(const std::filesystem::path& path) { return to_hex(file_digest(HashAlg::sha256, path)); }

void sync_directory(const std::filesystem::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw storage_error(dir, errno, "open");
  int result = ::fsync(fd);
  int error = errno;
  ::close(fd);
  if (result != 0) throw storage_error(dir, error, "flush");
}

// The content of an image being uploaded (SHA.part). Never followed through a symlink.
class PartFile {
 public:
  explicit PartFile(std::filesystem::path path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd_ < 0) throw storage_error(path_, errno, "open");
  }
  ~PartFile() { ::close(fd_); }
  PartFile(const PartFile&) = delete;
  PartFile& operator=(const PartFile&) = delete;

  std::int64_t size() const {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) throw storage_error(path_, errno, "inspect");
    if (!S_ISREG(st.st_mode))
      throw ApiError{500, "internal", fmt::format("{} is not a regular file", path_.filename().string())};
    return st.st_size;
  }

  void truncate(std::int64_t length) {
    if (::ftruncate(fd_, length) != 0 || ::fsync(fd_) != 0) throw storage_error(path_, errno, "truncate");
  }

  // Writes `chunk` at `offset`, a bounded piece at a time, and waits until it is on disk. On any failure (a
  // full disk, a short write) the file is cut back to `offset`, so nothing half-written is ever taken for
  // received content.
  void write_at(std::int64_t offset, const StreamedBody& chunk) {
    std::int64_t done = 0;
    int error = 0;
    bool sent = chunk.send(0, chunk.size(), [&](const char* data, std::size_t length) {
      if (!write_all_at(fd_, offset + done, data, length, error)) return false;
      done += static_cast<std::int64_t>(length);
      return true;
    });
    if (!sent && error == 0) error = EIO;  // the spooled request body could not be read back
    if (error == 0 && ::fsync(fd_) != 0) error = errno;
    if (error != 0) {
      // Best effort: cut the partial range off again. The write's error is the one the client hears, so
      // a failing truncate adds nothing (the result is still consumed: glibc's fortify warns otherwise).
      if (::ftruncate(fd_, static_cast<off_t>(offset)) != 0) {
      }
      throw storage_error(path_, error, "write");
    }
  }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};


}  // namespace

// One range of a Range header ("bytes=A-B", "bytes=A-", "bytes=-N"), clamped to the content; nullopt when
// the header is malformed (signs, spaces, junk, overflow, several ranges) or the range is unsatisfiable.
std::optional<std::pair<std::int64_t, std::int64_t>> byte_range(const std::string& header, std::int64_t size) {
  constexpr std::string_view unit = "bytes=";
  if (!header.starts_with(unit)) return std::nullopt;
  auto spec = std::string_view(header).substr(unit.size());
  auto dash = spec.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  auto number = [](std::string_view text) -> std::optional<std::int64_t> {
    std::int64_t value = 0;
    if (text.empty() || text.size() > 18 || text.find_first_not_of("0123456789") != std::string_view::npos)
      return std::nullopt;
    std::from_chars(text.data(), text.data() + text.size(), value);
    return value;
  };
  auto first_text = spec.substr(0, dash), last_text = spec.substr(dash + 1);
  if (first_text.empty()) {  // the last N bytes
    auto suffix = number(last_text);
    if (!suffix || *suffix == 0) return std::nullopt;
    return std::pair{std::max<std::int64_t>(0, size - *suffix), size - 1};
  }
  auto first = number(first_text);
  if (!first || *first >= size) return std::nullopt;
  if (last_text.empty()) return std::pair{*first, size - 1};
  auto last = number(last_text);
  if (!last || *last < *first) return std::nullopt;
  return std::pair{*first, std::min(*last, size - 1)};
}

Reply create_image(Call& call) {
  auto body = parse_object(call.request.body);
  auto sha = checked_sha(required_string(body, "sha256", 64));
  auto size_it = body.find("size");
  if (size_it == body.end() || !size_it->is_number_integer())
    throw ApiError{400, "invalid_request", "field 'size' must be an integer"};
  auto size = size_it->get<std::int64_t>();
  if (size < 1 || size > max_image_size) throw ApiError{400, "invalid_request", "size must be 1 byte .. 4 GiB"};
  auto name = optional_string(body, "name", 256);
  if (auto existing = find_image(call, sha)) {
    if (existing->size != size)
      throw ApiError{409, "conflict", fmt::format("image {} exists with size {}, not {}", sha, existing->size, size)};
    return {200, image_json(*existing)};
  }
  ImageRecord image;
  image.sha256 = sha;
  image.name = name.value_or("");
  image.size = size;
  image.created_at = now_iso8601();
  call.store.insert_image(call.who.tenant_id, image);
  std::filesystem::remove(content_path(call, sha, true));
  return {201, image_json(require_image(call, sha))};
}

Reply list_images(Call& call) {
  Json items = Json::array();
  for (auto& image : call.store.list_images(call.who.tenant_id)) items.push_back(image_json(image));
  return {200, Json{{"items", items}}};
}

Reply show_image(Call& call) { return {200, image_json(require_image(call, checked_sha(call.params[0])))}; }

Reply upload_image_chunk(Call& call) {
  auto sha = checked_sha(call.params[0]);
  auto offset = upload_offset(call);
  auto row = require_image(call, sha);
  if (row.complete) return {200, image_json(row)};
  auto part_path = content_path(call, sha, true);
  auto final_path = content_path(call, sha, false);
  auto record = [&] {
    call.store.record_upload(call.who.tenant_id, sha, row.received, row.complete);
  };
  // A crash between the rename of the finished content and the row update left the whole image in place.
  if (std::filesystem::exists(final_path) && file_sha256(final_path) == sha) {
    row.received = row.size;
    row.complete = true;
    record();
    std::filesystem::remove(part_path);
    return {200, image_json(row)};
  }
  PartFile part(part_path);
  // The row is committed only after the bytes below it are on disk, so the file is never shorter than
  // `received` unless someone removed it; bytes past `received` are from a chunk that was never recorded
  // (a crash or a failed write): they are dropped, and that chunk is sent again.
  auto on_disk = part.size();
  if (on_disk < row.received) {
    row.received = on_disk;
    record();
  } else if (on_disk > row.received) {
    part.truncate(row.received);
  }
  if (offset != row.received)
    throw ApiError{409, "offset_mismatch",
                   fmt::format("upload of {} continues at offset {}, not {}", sha, row.received, offset)};
  auto chunk = request_content(call.request);
  if (chunk.size() > row.size - row.received)
    throw ApiError{400, "invalid_request", "chunk goes past the image size"};
  part.write_at(row.received, chunk);
  row.received += chunk.size();
  if (row.received == row.size) {
    if (file_sha256(part_path) != sha) {
      row.received = 0;
      record();
      std::filesystem::remove(part_path);
      throw ApiError{422, "digest_mismatch", fmt::format("uploaded content does not hash to {}: upload again", sha)};
    }
    std::filesystem::rename(part_path, final_path);
    sync_directory(final_path.parent_path());
    row.complete = true;
  }
  record();
  return {200, image_json(row)};
}

Reply delete_image(Call& call) {
  auto sha = checked_sha(call.params[0]);
  auto tx = call.store.begin();
  require_image(call, sha);
  auto users = unfinished_deployments_using(call, sha);
  if (!users.empty()) {
    std::string names;
    for (auto& user : users) names += (names.empty() ? "" : ", ") + user;
    throw ApiError{409, "conflict",
                   fmt::format("image {} is in use by deployment{} {}: wait until {} completed, or abort {}", sha,
                               users.size() > 1 ? "s" : "", names, users.size() > 1 ? "they are" : "it is",
                               users.size() > 1 ? "them" : "it")};
  }
  call.store.delete_image(call.who.tenant_id, sha);
  tx->commit();
  // Content is per tenant and addressed by its SHA-256: with the row gone nothing refers to the file.
  std::error_code ignored;
  std::filesystem::remove(content_path(call, sha, false), ignored);
  std::filesystem::remove(content_path(call, sha, true), ignored);
  return {200, Json{{"deleted", sha}}};
}

Response content_response(const Call& call, StreamedBody whole) {
  auto size = whole.size();
  Response response;
  response.content_type = "application/octet-stream";
  response.headers["Accept-Ranges"] = "bytes";
  auto range = call.request.headers.find("range");
  if (range == call.request.headers.end()) {
    response.stream = std::move(whole);
    return response;
  }
  auto wanted = byte_range(range->second, size);
  if (!wanted) {
    response.status = 416;
    response.headers["Content-Range"] = fmt::format("bytes */{}", size);
    return response;
  }
  response.status = 206;
  response.headers["Content-Range"] = fmt::format("bytes {}-{}/{}", wanted->first, wanted->second, size);
  response.stream = whole.slice(wanted->first, wanted->second);
  return response;
}

Response download_image(Call& call) {
  auto sha = checked_sha(call.params[0]);
  auto row = require_image(call, sha);
  if (!row.complete) throw ApiError{409, "incomplete", fmt::format("image {} is still being uploaded", sha)};
  // Opened now, read as it is sent: a delete meanwhile removes the name, not the bytes this answer sends.
  auto file = BlobFile::open(content_path(call, sha, false));
  if (file->size() != row.size)
    throw ApiError{500, "internal", fmt::format("the content of image {} is {} bytes, not {}", sha, file->size(), row.size)};
  return content_response(call, StreamedBody::of_file(std::move(file)));
}

}  // namespace kiln::service
