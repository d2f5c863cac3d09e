// Blob files as transfers use them: an open file read at offsets while it streams out, and request bodies
// spooled to an unnamed file as they arrive, so image content is never held in memory whole.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "service/handlers.hpp"

namespace kiln::service {

// A file kept open for as long as a transfer holds it: a blob deleted meanwhile (its row and its name gone)
// is still read whole from its inode, never cut short or mixed with other content.
class BlobFile {
 public:
  // Opens `path` for reading (never through a symlink); ApiError 500 naming the blob when it cannot.
  static std::shared_ptr<const BlobFile> open(const std::filesystem::path& path);
  // Drains `read_body` into a file of `dir` that has no name (removed as soon as it is made, so nothing is
  // left behind by a crash); ApiError 507 when the disk is full, 400 when the client stops mid-body.
  static std::shared_ptr<const BlobFile> spool(const std::function<bool(const ByteReceiver&)>& read_body,
                                               const std::filesystem::path& dir);
  ~BlobFile();
  BlobFile(const BlobFile&) = delete;
  BlobFile& operator=(const BlobFile&) = delete;

  std::int64_t size() const { return size_; }
  // Up to `length` bytes at `offset` into `into`: fewer only where the file ends; -1 on a read error.
  std::int64_t read_at(std::int64_t offset, char* into, std::size_t length) const;
  // The whole content, for a body that is small by nature (a JSON request that came in as a stream).
  std::string read_all() const;

 private:
  BlobFile(int fd, std::int64_t size, std::string name) : fd_(fd), size_(size), name_(std::move(name)) {}
  int fd_ = -1;
  std::int64_t size_ = 0;
  std::string name_;
};

// Writes all of `data` at `offset` of `fd`; false with `error` (an errno value) when it cannot.
bool write_all_at(int fd, std::int64_t offset, const char* data, std::size_t length, int& error);

// The error a failed write to a blob file is answered with: 507 for a full disk or quota (the client frees
// space and resumes), else 500 naming the file and the reason.
ApiError storage_error(const std::filesystem::path& path, int error, const char* action);

// The content of a request as a body: its spooled file, else the bytes it carried.
StreamedBody request_content(const Request& request);

}  // namespace kiln::service
