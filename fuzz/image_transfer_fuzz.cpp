// libFuzzer: the numeric inputs of image transfers in kiln_service_lib, the `offset` of a chunk upload and
// the Range header of a download. The first byte picks which, the rest is the text. The service answers
// < 500 and never crashes; an offset that is not plain decimal is 400; a refused chunk leaves the upload
// untouched; a 206 carries exactly the bytes its Content-Range names.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "fuzz/scratch_dir.hpp"
#include "service/api.hpp"
#include "signing/signer.hpp"

namespace {

struct World {
  kiln::service::Service service{{":memory:", kiln::fuzz::scratch_dir() / "images"}};
  std::string token;
  std::string content = "0123456789abcdefghijklmnopqrstuv";  // a complete image of 32 bytes
  std::string complete_sha = kiln::to_hex(kiln::digest(kiln::HashAlg::sha256, kiln::as_bytes(content)));
  std::string upload_sha = std::string(64, 'a');  // an upload in progress (its digest never matches)
  World() {
    auto tenant = service.create_tenant("fuzz");
    token = service.create_token(tenant, kiln::service::Role::admin, "fuzz");
    call("POST", "/v1/images", nlohmann::json{{"sha256", complete_sha}, {"size", content.size()}}.dump());
    if (call("PUT", "/v1/images/" + complete_sha + "/content?offset=0", content).status != 200) std::abort();
    call("POST", "/v1/images", nlohmann::json{{"sha256", upload_sha}, {"size", 64}}.dump());
  }
  kiln::service::Response call(const std::string& method, const std::string& target, std::string body,
                               const std::string& range = {}) {
    std::map<std::string, std::string> headers{{"authorization", "Bearer " + token}};
    if (!range.empty()) headers["range"] = range;
    auto response = service.handle({method, target, headers, std::move(body), {}});
    if (response.stream) {  // content is streamed: read it whole (32 bytes) for the checks
      response.stream->send(0, response.stream->size(), [&](const char* piece, std::size_t length) {
        response.body.append(piece, length);
        return true;
      });
      response.stream.reset();
    }
    return response;
  }
  std::int64_t received() {
    auto shown = nlohmann::json::parse(call("GET", "/v1/images/" + upload_sha, "").body);
    return shown["received"].get<std::int64_t>();
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static World world;
  if (size == 0) return 0;
  std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    auto before = world.received();
    auto response = world.call("PUT", "/v1/images/" + world.upload_sha + "/content?offset=" + text, "x");
    if (response.status >= 500) std::abort();
    // Text the query parser takes as it is (no escapes, no further parameters) is an offset only in plain digits.
    bool plain = text.find_first_of("%&+#=") == std::string::npos;
    bool digits = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
    if (plain && !digits && response.status != 400) std::abort();
    auto after = world.received();
    if (response.status == 200 && after != before + 1) std::abort();
    if (response.status != 200 && response.status != 422 && after != before) std::abort();
  } else {
    auto response = world.call("GET", "/v1/images/" + world.complete_sha + "/content", "", text);
    if (response.status >= 500) std::abort();
    if (text.empty()) {
      if (response.status != 200 || response.body != world.content) std::abort();
    } else if (response.status == 206) {
      long long first = -1, last = -1, total = -1;
      if (std::sscanf(response.headers["Content-Range"].c_str(), "bytes %lld-%lld/%lld", &first, &last, &total) != 3)
        std::abort();
      if (first < 0 || last < first || last >= 32 || total != 32) std::abort();
      if (response.body != world.content.substr(static_cast<std::size_t>(first), static_cast<std::size_t>(last - first + 1)))
        std::abort();
    } else if (response.status != 416) {
      std::abort();
    }
  }
  return 0;
}
