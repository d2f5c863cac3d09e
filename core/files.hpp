// File I/O with clear errors: whole-file reads, chunked reads, and atomic writes (temp + rename).
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace kiln {

std::vector<std::uint8_t> read_file(const std::filesystem::path& path);
std::string read_text_file(const std::filesystem::path& path);
// Up to `length` bytes at `offset` (fewer where the file ends first) without disturbing a sequential reader of
// the same file: the small parts of an image (header, TLV areas, trailer) read beside a streaming pass.
std::vector<std::uint8_t> read_file_range(const std::filesystem::path& path, std::uint64_t offset, std::size_t length);

// Reads a file sequentially in fixed-size chunks; constant memory for any file size.
class ChunkReader {
 public:
  explicit ChunkReader(const std::filesystem::path& path, std::size_t chunk_size = 1 << 20);
  ~ChunkReader();
  ChunkReader(const ChunkReader&) = delete;
  ChunkReader& operator=(const ChunkReader&) = delete;
  // The next chunk; empty at end of file.
  std::span<const std::uint8_t> next();
  std::uint64_t size() const { return size_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
  std::vector<std::uint8_t> buffer_;
};

// True for an output written in place instead of by temp file + rename: "-" (standard output) and an
// existing path that is not a regular file (a device such as /dev/null, a FIFO, a socket). Renaming a
// file onto a device node replaces the node (as root: /dev/null becomes a regular file).
bool writes_in_place(const std::filesystem::path& path);
// True once an output went to standard output ("-"): results are rendered on stderr from then on, so
// stdout carries only that output.
bool standard_output_taken();

// Writes to "<path>.kiln-XXXXXX" in the same directory and renames over `path` on commit().
// Destroyed without commit(), it removes the temp file: no partial output is ever left behind.
// Outputs for which writes_in_place() holds are opened and written in place instead (no temp file, no
// rename, no --force needed: there is no file to lose); secret data (mode without group/other bits) is
// never written to a terminal.
class AtomicFile {
 public:
  enum class Overwrite { refuse, allow };
  // mode: 0600 for anything secret, 0644 otherwise.
  AtomicFile(std::filesystem::path path, unsigned mode = 0644, Overwrite overwrite = Overwrite::allow);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(std::span<const std::uint8_t> data);
  void write(std::string_view text);
  std::uint64_t written() const { return written_; }
  // Reserves disk space for a file of `size` bytes: a full disk fails now, not after minutes of
  // work, and the file is laid out in one piece. The file's size is unchanged (only what is written
  // counts). A no-op where the filesystem cannot reserve.
  void reserve(std::uint64_t size);
  // Asks the kernel to start writing what was written so far to disk, without waiting, so that
  // commit()'s fsync has little left to do for large files.
  void start_writeback();
  void commit();

 private:
  std::filesystem::path path_;
  std::filesystem::path temp_path_;
  int fd_ = -1;
  std::uint64_t written_ = 0;
  Overwrite overwrite_;
  bool in_place_ = false;
  bool committed_ = false;
};

// A private file ("<prefix>XXXXXX", mode 0600, made by mkstemp), removed when destroyed.
class TemporaryFile {
 public:
  explicit TemporaryFile(const std::filesystem::path& prefix);
  ~TemporaryFile();
  TemporaryFile(const TemporaryFile&) = delete;
  TemporaryFile& operator=(const TemporaryFile&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Copies the file `from` to `out` through AtomicFile: renamed into place for a regular file, written
// in place for a device, FIFO or "-".
void copy_file_to(const std::filesystem::path& from, const std::filesystem::path& out, unsigned mode = 0644);

// Convenience: atomically replace `path` with `data`.
void write_file_atomic(const std::filesystem::path& path, std::span<const std::uint8_t> data,
                       unsigned mode = 0644, AtomicFile::Overwrite overwrite = AtomicFile::Overwrite::allow);

}  // namespace kiln
