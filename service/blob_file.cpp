// Blob files: open files that outlive their names, bodies streamed from them in bounded pieces, spooling.
#include "service/blob_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

namespace kiln::service {
namespace {

// The largest piece a transfer reads or writes at once: what a stream holds in memory.
constexpr std::size_t piece_size = 64 * 1024;

}  // namespace

bool write_all_at(int fd, std::int64_t offset, const char* data, std::size_t length, int& error) {
  while (length > 0) {
    auto n = ::pwrite(fd, data, length, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error = n < 0 ? errno : ENOSPC;
      return false;
    }
    data += n;
    offset += n;
    length -= static_cast<std::size_t>(n);
  }
  return true;
}

ApiError storage_error(const std::filesystem::path& path, int error, const char* action) {
  if (error == ENOSPC || error == EDQUOT)
    return {507, "insufficient_storage",
            "the service has no room for this image: free disk space and resume the upload"};
  return {500, "internal", fmt::format("cannot {} {}: {}", action, path.filename().string(), std::strerror(error))};
}

std::shared_ptr<const BlobFile> BlobFile::open(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  struct stat st {};
  if (fd >= 0 && ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
    return std::shared_ptr<const BlobFile>(new BlobFile(fd, st.st_size, path.filename().string()));
  int error = fd < 0 ? errno : EINVAL;
  if (fd >= 0) ::close(fd);
  throw ApiError{500, "internal",
                 fmt::format("cannot read the content of {}: {}", path.filename().string(), std::strerror(error))};
}

std::shared_ptr<const BlobFile> BlobFile::spool(const std::function<bool(const ByteReceiver&)>& read_body,
                                                const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  std::string name = (dir / ".incoming-XXXXXX").string();
  int fd = ::mkostemp(name.data(), O_CLOEXEC);
  if (fd < 0) throw storage_error(dir / ".incoming", errno, "create");
  ::unlink(name.c_str());
  std::shared_ptr<BlobFile> file(new BlobFile(fd, 0, "the request body"));
  // After a failed write the rest of the body is still read (and dropped): the connection stays usable
  // for the error answer.
  int error = 0;
  std::int64_t size = 0;
  bool complete = read_body([&](const char* data, std::size_t length) {
    if (error == 0 && write_all_at(fd, size, data, length, error)) size += static_cast<std::int64_t>(length);
    return true;
  });
  if (error != 0) throw storage_error(dir / ".incoming", error, "write");
  if (!complete)
    throw ApiError{400, "invalid_request",
                   "the request body could not be read whole: it was cut off, or is larger than a request may be"};
  file->size_ = size;
  return file;
}

BlobFile::~BlobFile() { ::close(fd_); }

std::int64_t BlobFile::read_at(std::int64_t offset, char* into, std::size_t length) const {
  std::size_t done = 0;
  while (done < length) {
    auto n = ::pread(fd_, into + done, length - done, static_cast<off_t>(offset + static_cast<std::int64_t>(done)));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  return static_cast<std::int64_t>(done);
}

std::string BlobFile::read_all() const {
  std::string out(static_cast<std::size_t>(size_), '\0');
  if (read_at(0, out.data(), out.size()) != size_)
    throw ApiError{500, "internal", fmt::format("cannot read {}", name_)};
  return out;
}

StreamedBody StreamedBody::of_file(std::shared_ptr<const BlobFile> file) {
  auto size = file->size();
  return {{{std::move(file), 0, size}}};
}

std::int64_t StreamedBody::size() const {
  std::int64_t total = 0;
  for (auto& piece : pieces) total += piece.length;
  return total;
}

StreamedBody StreamedBody::slice(std::int64_t first, std::int64_t last) const {
  StreamedBody out;
  std::int64_t at = 0;  // where the current piece starts in this body
  for (auto& piece : pieces) {
    std::int64_t begin = std::max(first, at), end = std::min(last + 1, at + piece.length);
    if (begin < end) {
      Piece part{piece.file, piece.offset + (begin - at), end - begin};
      if (!piece.file)
        part.bytes = piece.bytes.substr(static_cast<std::size_t>(begin - at), static_cast<std::size_t>(end - begin));
      out.pieces.push_back(std::move(part));
    }
    at += piece.length;
  }
  return out;
}

bool StreamedBody::send(std::int64_t offset, std::int64_t length, const ByteReceiver& write) const {
  std::vector<char> buffer;
  std::int64_t at = 0;
  for (auto& piece : pieces) {
    std::int64_t begin = std::max(offset, at), end = std::min(offset + length, at + piece.length);
    for (std::int64_t position = begin; position < end;) {
      auto n = static_cast<std::size_t>(std::min<std::int64_t>(end - position, piece_size));
      std::int64_t within = position - at;
      if (!piece.file) {
        if (!write(piece.bytes.data() + within, n)) return false;
      } else {
        buffer.resize(piece_size);
        if (piece.file->read_at(piece.offset + within, buffer.data(), n) != static_cast<std::int64_t>(n)) return false;
        if (!write(buffer.data(), n)) return false;
      }
      position += static_cast<std::int64_t>(n);
    }
    at += piece.length;
  }
  return true;
}

StreamedBody request_content(const Request& request) {
  if (request.body_file) return StreamedBody::of_file(request.body_file);
  return {{{nullptr, 0, static_cast<std::int64_t>(request.body.size()), request.body}}};
}

}  // namespace kiln::service
