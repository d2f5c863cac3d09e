// Images: content-addressed by SHA-256 per tenant; resumable chunked upload; download with Range.
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "service/handlers.hpp"
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

struct ImageRow {
  std::string sha256, name;
  std::int64_t size = 0, received = 0;
  bool complete = false;
  std::string created_at;
};

std::optional<ImageRow> find_image(Call& call, const std::string& sha) {
  auto q = call.db.prepare("SELECT sha256, coalesce(name, ''), size, received, complete, created_at FROM images "
                           "WHERE tenant_id = ? AND sha256 = ?");
  q.bind(1, call.who.tenant_id).bind(2, sha);
  if (!q.step()) return std::nullopt;
  return ImageRow{q.text(0), q.text(1), q.integer(2), q.integer(3), q.integer(4) != 0, q.text(5)};
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

}  // namespace

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
  call.db.prepare("INSERT INTO images (tenant_id, sha256, name, size, created_at) VALUES (?, ?, ?, ?, ?)")
      .bind(1, call.who.tenant_id)
      .bind(2, sha)
      .bind_optional(3, name)
      .bind(4, size)
      .bind(5, now_iso8601())
      .run();
  std::filesystem::remove(content_path(call, sha, true));
  return {201, image_json(require_image(call, sha))};
}

Reply list_images(Call& call) {
  auto q = call.db.prepare("SELECT sha256, coalesce(name, ''), size, received, complete, created_at FROM images "
                           "WHERE tenant_id = ? ORDER BY created_at, sha256");
  q.bind(1, call.who.tenant_id);
  Json items = Json::array();
  while (q.step()) items.push_back(image_json({q.text(0), q.text(1), q.integer(2), q.integer(3), q.integer(4) != 0, q.text(5)}));
  return {200, Json{{"items", items}}};
}

Reply show_image(Call& call) { return {200, image_json(require_image(call, checked_sha(call.params[0])))}; }

Reply upload_image_chunk(Call& call) {
  auto sha = checked_sha(call.params[0]);
  auto row = require_image(call, sha);
  if (row.complete) return {200, image_json(row)};
  std::int64_t offset = -1;
  try {
    offset = std::stoll(call.query_value("offset").value_or("-1"));
  } catch (const std::exception&) {
  }
  if (offset != row.received)
    throw ApiError{409, "offset_mismatch",
                   fmt::format("upload of {} continues at offset {}, not {}", sha, row.received, offset)};
  auto& chunk = call.request.body;
  if (static_cast<std::int64_t>(chunk.size()) > row.size - row.received)
    throw ApiError{400, "invalid_request", "chunk goes past the image size"};
  auto part = content_path(call, sha, true);
  {
    std::ofstream out(part, std::ios::binary | std::ios::app);
    out.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    if (!out) throw ApiError{500, "internal", "cannot write image content"};
  }
  row.received += static_cast<std::int64_t>(chunk.size());
  if (row.received == row.size) {
    Hasher hasher(HashAlg::sha256);
    ChunkReader reader(part);
    for (auto piece = reader.next(); !piece.empty(); piece = reader.next()) hasher.update(piece);
    if (to_hex(hasher.finish()) != sha) {
      std::filesystem::remove(part);
      call.db.prepare("UPDATE images SET received = 0 WHERE tenant_id = ? AND sha256 = ?").bind(1, call.who.tenant_id).bind(2, sha).run();
      throw ApiError{422, "digest_mismatch", fmt::format("uploaded content does not hash to {}: upload again", sha)};
    }
    std::filesystem::rename(part, content_path(call, sha, false));
    row.complete = true;
  }
  call.db.prepare("UPDATE images SET received = ?, complete = ? WHERE tenant_id = ? AND sha256 = ?")
      .bind(1, row.received)
      .bind(2, std::int64_t{row.complete})
      .bind(3, call.who.tenant_id)
      .bind(4, sha)
      .run();
  return {200, image_json(row)};
}

Response download_image(Call& call) {
  auto sha = checked_sha(call.params[0]);
  auto row = require_image(call, sha);
  if (!row.complete) throw ApiError{409, "incomplete", fmt::format("image {} is still being uploaded", sha)};
  std::int64_t first = 0, last = row.size - 1;
  Response response;
  response.content_type = "application/octet-stream";
  response.headers["Accept-Ranges"] = "bytes";
  auto range = call.request.headers.find("range");
  if (range != call.request.headers.end()) {
    long long a = -1, b = -1;
    int n = std::sscanf(range->second.c_str(), "bytes=%lld-%lld", &a, &b);
    if (n < 1 || a < 0 || a >= row.size || (n == 2 && (b < a))) {
      response.status = 416;
      response.headers["Content-Range"] = fmt::format("bytes */{}", row.size);
      return response;
    }
    first = a;
    if (n == 2) last = std::min<std::int64_t>(b, row.size - 1);
    response.status = 206;
    response.headers["Content-Range"] = fmt::format("bytes {}-{}/{}", first, last, row.size);
  }
  std::ifstream in(content_path(call, sha, false), std::ios::binary);
  in.seekg(first);
  response.body.resize(static_cast<std::size_t>(last - first + 1));
  in.read(response.body.data(), static_cast<std::streamsize>(response.body.size()));
  if (!in) throw ApiError{500, "internal", "cannot read image content"};
  return response;
}

}  // namespace kiln::service
