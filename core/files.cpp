// File I/O with clear errors; AtomicFile guarantees no partial output on failure.
#include "core/files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fmt/format.h>

#include "core/error.hpp"

namespace kiln {
namespace {

Error open_error(const std::filesystem::path& path, int err, const char* what) {
  ExitCode code = err == ENOENT ? ExitCode::not_found : ExitCode::failure;
  std::string hint;
  if (err == ENOENT) hint = "check the path";
  else if (err == EACCES || err == EPERM) hint = "check the file's permissions";
  else if (err == EISDIR) hint = "name a file, not a directory";
  return Error(code, fmt::format("cannot {} {}: {}", what, path.string(), std::strerror(err)), hint);
}

}  // namespace

std::vector<std::uint8_t> read_file(const std::filesystem::path& path) {
  ChunkReader reader(path);
  std::vector<std::uint8_t> out;
  out.reserve(reader.size());
  for (auto chunk = reader.next(); !chunk.empty(); chunk = reader.next())
    out.insert(out.end(), chunk.begin(), chunk.end());
  return out;
}

std::vector<std::uint8_t> read_file_range(const std::filesystem::path& path, std::uint64_t offset, std::size_t length) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw open_error(path, errno, "read");
  // The buffer is no larger than what the file holds past the offset: a length taken from a hostile header
  // must not allocate (and zero) gigabytes for a file of a few kilobytes.
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
    auto size = static_cast<std::uint64_t>(st.st_size);
    length = static_cast<std::size_t>(std::min<std::uint64_t>(length, offset < size ? size - offset : 0));
  }
  std::vector<std::uint8_t> out(length);
  std::size_t filled = 0;
  while (filled < length) {
    ssize_t n = ::pread(fd, out.data() + filled, length - filled, static_cast<off_t>(offset + filled));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      throw open_error(path, err, "read");
    }
    if (n == 0) break;
    filled += static_cast<std::size_t>(n);
  }
  ::close(fd);
  out.resize(filled);
  return out;
}

std::string read_text_file(const std::filesystem::path& path) {
  auto bytes = read_file(path);
  return std::string(bytes.begin(), bytes.end());
}

ChunkReader::ChunkReader(const std::filesystem::path& path, std::size_t chunk_size)
    : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw open_error(path, errno, "read");
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    int err = errno;
    ::close(fd_);
    throw open_error(path, err, "read");
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd_);
    throw open_error(path, EISDIR, "read");
  }
  size_ = static_cast<std::uint64_t>(st.st_size);
  // A regular file smaller than a chunk gets a buffer its size (at least 16 KiB, should it grow): a 1 MiB
  // buffer zeroed for a 2 KiB image was most of the cost of inspecting one. Devices and FIFOs report no size.
  std::size_t buffer_size = chunk_size;
  if (S_ISREG(st.st_mode))
    buffer_size = static_cast<std::size_t>(std::min<std::uint64_t>(chunk_size, std::max<std::uint64_t>(size_, 16 * 1024)));
  buffer_.resize(buffer_size);
#ifdef POSIX_FADV_SEQUENTIAL
  ::posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
}

ChunkReader::~ChunkReader() {
  if (fd_ >= 0) ::close(fd_);
}

std::span<const std::uint8_t> ChunkReader::next() {
  std::size_t filled = 0;
  while (filled < buffer_.size()) {
    ssize_t n = ::read(fd_, buffer_.data() + filled, buffer_.size() - filled);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw open_error(path_, errno, "read");
    }
    if (n == 0) break;
    filled += static_cast<std::size_t>(n);
  }
  return {buffer_.data(), filled};
}

namespace {
std::atomic<bool> stdout_taken{false};
}  // namespace

bool writes_in_place(const std::filesystem::path& path) {
  if (path == "-") return true;
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode);
}

bool standard_output_taken() { return stdout_taken.load(); }

AtomicFile::AtomicFile(std::filesystem::path path, unsigned mode, Overwrite overwrite)
    : path_(std::move(path)), overwrite_(overwrite) {
  if (writes_in_place(path_)) {
    in_place_ = true;
    bool secret = (mode & 077) == 0;
    if (path_ == "-") {
      if (secret && ::isatty(STDOUT_FILENO) == 1)
        throw Error(ExitCode::usage, "refusing to write secret data to the terminal",
                    "name a file, or pipe standard output elsewhere");
      fd_ = ::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 0);
      if (fd_ < 0) throw open_error("standard output", errno, "write");
      stdout_taken = true;
      return;
    }
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY);
    if (fd_ < 0) throw open_error(path_, errno, "write");
    if (secret && ::isatty(fd_) == 1) {
      ::close(fd_);
      fd_ = -1;
      throw Error(ExitCode::usage, fmt::format("refusing to write secret data to the terminal {}", path_.string()),
                  "name a regular file");
    }
    return;
  }
  if (overwrite_ == Overwrite::refuse && std::filesystem::exists(path_))
    throw Error(ExitCode::conflict, fmt::format("{} already exists", path_.string()),
                "pass --force to overwrite it, or choose another path");
  auto dir = path_.parent_path();
  if (dir.empty()) dir = ".";
  std::string templ = (dir / (path_.filename().string() + ".kiln-XXXXXX")).string();
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  fd_ = ::mkostemp(buf.data(), O_CLOEXEC);
  if (fd_ < 0) throw open_error(path_, errno, "write");
  temp_path_ = buf.data();
  if (::fchmod(fd_, mode) != 0) {
    int err = errno;
    ::close(fd_);
    ::unlink(temp_path_.c_str());
    fd_ = -1;
    throw open_error(path_, err, "write");
  }
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !temp_path_.empty()) ::unlink(temp_path_.c_str());
}

void AtomicFile::write(std::span<const std::uint8_t> data) {
  const std::uint8_t* p = data.data();
  std::size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw open_error(path_, errno, "write");
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  written_ += data.size();
}

void AtomicFile::write(std::string_view text) {
  write(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
}

void AtomicFile::reserve(std::uint64_t size) {
  if (in_place_) return;  // a device or pipe has nothing to reserve
  // KEEP_SIZE: a reservation larger than what is finally written never shows up as file content.
  if (size == 0 || ::fallocate(fd_, FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(size)) == 0) return;
  if (errno == ENOSPC || errno == EDQUOT || errno == EFBIG) throw open_error(path_, errno, "write");
}

void AtomicFile::start_writeback() {
  if (in_place_) return;
  // Only a hint: an error here resurfaces in commit()'s fsync.
  ::sync_file_range(fd_, 0, 0, SYNC_FILE_RANGE_WRITE);
}

void AtomicFile::commit() {
  // Pipes and most character devices cannot be synced (EINVAL): what they took is theirs.
  if (::fsync(fd_) != 0 && !(in_place_ && (errno == EINVAL || errno == EROFS))) throw open_error(path_, errno, "write");
  if (::close(fd_) != 0) {
    fd_ = -1;
    throw open_error(path_, errno, "write");
  }
  fd_ = -1;
  if (in_place_) {
    committed_ = true;
    return;
  }
  if (overwrite_ == Overwrite::refuse) {
    // link() fails if the target appeared meanwhile: never clobber a key written concurrently.
    if (::link(temp_path_.c_str(), path_.c_str()) != 0) {
      int err = errno;
      if (err == EEXIST)
        throw Error(ExitCode::conflict, fmt::format("{} already exists", path_.string()),
                    "pass --force to overwrite it, or choose another path");
      throw open_error(path_, err, "write");
    }
    ::unlink(temp_path_.c_str());
  } else if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    throw open_error(path_, errno, "write");
  }
  committed_ = true;
}

TemporaryFile::TemporaryFile(const std::filesystem::path& prefix) {
  std::string templ = prefix.string() + "XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  int fd = ::mkostemp(buf.data(), O_CLOEXEC);
  if (fd < 0) throw open_error(prefix.parent_path(), errno, "write");
  ::close(fd);
  path_ = buf.data();
}

TemporaryFile::~TemporaryFile() { ::unlink(path_.c_str()); }

void copy_file_to(const std::filesystem::path& from, const std::filesystem::path& out, unsigned mode) {
  AtomicFile file(out, mode);
  ChunkReader reader(from);
  for (auto piece = reader.next(); !piece.empty(); piece = reader.next()) file.write(piece);
  file.commit();
}

void write_file_atomic(const std::filesystem::path& path, std::span<const std::uint8_t> data, unsigned mode,
                       AtomicFile::Overwrite overwrite) {
  AtomicFile file(path, mode, overwrite);
  file.write(data);
  file.commit();
}

}  // namespace kiln
