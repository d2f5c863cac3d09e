// The typed service client: credentials resolution, JSON calls, paging, batched import, resumable upload.
#include "transport/service_api.hpp"

#include <cstdlib>
#include <chrono>
#include <fstream>
#include <thread>

#include <fmt/format.h>

#include "core/error.hpp"
#include "core/files.hpp"
#include "core/interrupt.hpp"
#include "signing/signer.hpp"

namespace kiln::transport {
namespace {

constexpr std::size_t import_batch_units = 2000;
constexpr std::size_t import_batch_bytes = 4 << 20;

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

Json parse_json(const HttpResponse& response, const std::string& path) {
  auto value = Json::parse(response.body, nullptr, false);
  if (value.is_discarded())
    throw Error(ExitCode::service, fmt::format("the service answered {} with something that is not JSON", path));
  return value;
}

std::string segment(const std::string& text) { return url_encode(text); }

std::string device_query(const DeviceFilter& filter) {
  std::string q;
  auto add = [&](const char* name, const std::optional<std::string>& value) {
    if (value) q += fmt::format("&{}={}", name, url_encode(*value));
  };
  add("group", filter.group);
  add("product", filter.product);
  add("state", filter.state);
  add("version", filter.version);
  add("seen_before", filter.seen_before);
  add("seen_after", filter.seen_after);
  if (filter.claimed) q += *filter.claimed ? "&claimed=true" : "&claimed=false";
  return q;
}

}  // namespace

std::filesystem::path credentials_path() {
  if (auto xdg = env("XDG_CONFIG_HOME")) return std::filesystem::path(*xdg) / "kiln" / "credentials";
  if (auto home = env("HOME")) return std::filesystem::path(*home) / ".config" / "kiln" / "credentials";
  throw Error(ExitCode::failure, "neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep credentials");
}

Credentials load_credentials(const std::optional<std::string>& configured_service) {
  Credentials c;
  auto path = credentials_path();
  if (std::filesystem::exists(path)) {
    auto stored = Json::parse(read_text_file(path), nullptr, false);
    if (!stored.is_object())
      throw Error(ExitCode::failure, fmt::format("{} is damaged", path.string()), "run kiln login again");
    c.service = stored.value("service", "");
    c.token = stored.value("token", "");
    c.ca_file = stored.value("ca_file", "");
  }
  if (c.service.empty() && configured_service) c.service = *configured_service;
  if (auto v = env("KILN_SERVICE")) c.service = *v;
  if (auto v = env("KILN_TOKEN")) c.token = *v;
  if (auto v = env("KILN_CA_FILE")) c.ca_file = *v;
  if (c.service.empty() || c.token.empty())
    throw Error(ExitCode::authentication, "not logged in to a kiln service",
                "kiln login --service https://HOST:PORT --token-file FILE (CI: set KILN_SERVICE and KILN_TOKEN)");
  return c;
}

ServiceApi::ServiceApi(const Credentials& credentials)
    : http_(HttpConfig{.base_url = credentials.service, .bearer_token = credentials.token, .ca_file = credentials.ca_file}) {}

Json ServiceApi::get(const std::string& path) { return parse_json(http_.call({.method = "GET", .path = path}), path); }

Json ServiceApi::post(const std::string& path, const Json& body, std::string idempotency_key) {
  if (idempotency_key.empty()) idempotency_key = new_idempotency_key();
  return parse_json(http_.call({.method = "POST", .path = path, .body = body.dump(), .idempotency_key = idempotency_key}), path);
}

Json ServiceApi::patch(const std::string& path, const Json& body) {
  return parse_json(http_.call({.method = "PATCH", .path = path, .body = body.dump()}), path);
}

Json ServiceApi::remove(const std::string& path) { return parse_json(http_.call({.method = "DELETE", .path = path}), path); }

Json login(const Credentials& credentials) {
  ServiceApi api(credentials);
  Json who = whoami(api);
  Json stored{{"service", credentials.service}, {"token", credentials.token}};
  if (!credentials.ca_file.empty()) stored["ca_file"] = std::filesystem::absolute(credentials.ca_file).string();
  auto path = credentials_path();
  if (std::filesystem::create_directories(path.parent_path()))
    std::filesystem::permissions(path.parent_path(), std::filesystem::perms::owner_all);
  write_file_atomic(path, as_bytes(stored.dump() + "\n"), 0600);
  who["service"] = credentials.service;
  who["credentials"] = path.string();
  return who;
}

bool logout() { return std::filesystem::remove(credentials_path()); }

Json whoami(ServiceApi& api) { return api.get("/v1/whoami"); }

Json create_product(ServiceApi& api, const std::string& name, const std::string& description) {
  return api.post("/v1/products", {{"name", name}, {"description", description}});
}
Json list_products(ServiceApi& api) { return api.get("/v1/products")["items"]; }
Json show_product(ServiceApi& api, const std::string& ref) { return api.get("/v1/products/" + segment(ref)); }
Json delete_product(ServiceApi& api, const std::string& ref) { return api.remove("/v1/products/" + segment(ref)); }

Json create_group(ServiceApi& api, const std::string& product, const std::string& name, const std::string& description) {
  return api.post("/v1/groups", {{"product", product}, {"name", name}, {"description", description}});
}
Json list_groups(ServiceApi& api, const std::optional<std::string>& product) {
  return api.get("/v1/groups" + (product ? "?product=" + url_encode(*product) : std::string()))["items"];
}
Json show_group(ServiceApi& api, const std::string& ref) { return api.get("/v1/groups/" + segment(ref)); }
Json update_group(ServiceApi& api, const std::string& ref, const std::optional<std::string>& name,
                  const std::optional<std::string>& description) {
  Json body = Json::object();
  if (name) body["name"] = *name;
  if (description) body["description"] = *description;
  return api.patch("/v1/groups/" + segment(ref), body);
}
Json delete_group(ServiceApi& api, const std::string& ref) { return api.remove("/v1/groups/" + segment(ref)); }

void list_devices(ServiceApi& api, const DeviceFilter& filter, const std::function<void(const Json&)>& each, int page_size) {
  std::string base = fmt::format("/v1/devices?limit={}{}", page_size, device_query(filter));
  std::optional<std::string> cursor;
  while (true) {
    check_interrupted();
    Json page = api.get(cursor ? base + "&cursor=" + url_encode(*cursor) : base);
    for (const auto& device : page["items"]) each(device);
    if (!page["next_cursor"].is_string()) break;
    cursor = page["next_cursor"].get<std::string>();
  }
}

Json count_devices(ServiceApi& api, const std::string& by, const DeviceFilter& filter) {
  return api.get("/v1/devices/count?by=" + url_encode(by) + device_query(filter));
}

Json show_device(ServiceApi& api, const std::string& id) { return api.get("/v1/devices/" + segment(id)); }

Json assign_device(ServiceApi& api, const std::string& id, const std::string& group) {
  return api.post("/v1/devices/" + segment(id) + "/assign", {{"group", group}});
}

Json import_devices(ServiceApi& api, const std::filesystem::path& bundle, const std::function<void(std::uint64_t)>& progress) {
  std::ifstream in(bundle, std::ios::binary);
  if (!in) throw Error(ExitCode::not_found, fmt::format("cannot open bundle {}", bundle.string()));
  std::uint64_t sent = 0, imported = 0, batches = 0;
  std::string batch, line;
  std::size_t units = 0;
  auto flush = [&] {
    if (units == 0) return;
    // One key per batch, reused by the client's retries: a batch is applied once.
    auto response = api.http().call({.method = "POST",
                                     .path = "/v1/devices/import",
                                     .body = batch,
                                     .content_type = "application/x-ndjson",
                                     .idempotency_key = new_idempotency_key()});
    imported += parse_json(response, "/v1/devices/import").value("imported", std::uint64_t{0});
    sent += units;
    ++batches;
    batch.clear();
    units = 0;
    if (progress) progress(sent);
  };
  while (std::getline(in, line)) {
    check_interrupted();
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    batch += line;
    batch += '\n';
    if (++units >= import_batch_units || batch.size() >= import_batch_bytes) flush();
  }
  flush();
  return {{"bundle", bundle.string()}, {"imported", imported}, {"batches", batches}};
}

Json claim_challenge(ServiceApi& api, const std::string& id) {
  return api.post("/v1/devices/" + segment(id) + "/claim-challenge", Json::object());
}

Json claim_with_signature(ServiceApi& api, const std::string& id, const std::string& nonce, ByteView signature) {
  return api.post("/v1/devices/" + segment(id) + "/claim", {{"nonce", nonce}, {"signature", to_hex(signature)}});
}

Json claim_device(ServiceApi& api, const std::string& id, const std::function<Bytes(const std::string&)>& sign) {
  Json challenge = claim_challenge(api, id);
  Bytes signature = sign(challenge["message"].get<std::string>());
  return claim_with_signature(api, id, challenge["nonce"].get<std::string>(), signature);
}

Json register_factory_ca(ServiceApi& api, const std::filesystem::path& certificate_pem) {
  return api.post("/v1/factory-cas", {{"certificate", read_text_file(certificate_pem)}});
}
Json list_factory_cas(ServiceApi& api) { return api.get("/v1/factory-cas")["items"]; }

Json upload_image(ServiceApi& api, const std::filesystem::path& file,
                  const std::function<void(std::uint64_t, std::uint64_t)>& progress, std::size_t chunk_size) {
  std::string sha;
  std::uint64_t size = 0;
  {
    ChunkReader reader(file);
    Hasher hasher(HashAlg::sha256);
    for (auto piece = reader.next(); !piece.empty(); piece = reader.next()) {
      check_interrupted();
      hasher.update(piece);
    }
    sha = to_hex(hasher.finish());
    size = reader.size();
  }
  if (size == 0) throw Error(ExitCode::failure, fmt::format("{} is empty", file.string()));
  Json status = api.post("/v1/images", {{"sha256", sha}, {"size", size}, {"name", file.filename().string()}});
  bool already_there = status.value("complete", false);
  std::uint64_t received = status.value("received", std::uint64_t{0});
  std::uint64_t resumed_from = received;
  if (!already_there) {
    std::ifstream in(file, std::ios::binary);
    std::string chunk;
    while (received < size) {
      check_interrupted();
      if (progress) progress(received, size);
      chunk.resize(static_cast<std::size_t>(std::min<std::uint64_t>(chunk_size, size - received)));
      in.seekg(static_cast<std::streamoff>(received));
      in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      if (!in) throw Error(ExitCode::failure, fmt::format("cannot read {}", file.string()));
      HttpRequest put{.method = "PUT",
                      .path = fmt::format("/v1/images/{}/content?offset={}", sha, received),
                      .body = chunk,
                      .content_type = "application/octet-stream"};
      auto response = api.http().send(put);
      if (response.status == 409) {
        // Our view of the offset is stale (e.g. a chunk landed but its answer was lost): ask and go on.
        received = show_image(api, sha).value("received", std::uint64_t{0});
        continue;
      }
      if (response.status >= 400) throw_http_error(put, response);
      status = parse_json(response, put.path);
      received = status.value("received", std::uint64_t{0});
    }
    if (progress) progress(size, size);
  }
  return {{"id", sha}, {"size", size}, {"uploaded", !already_there}, {"resumed_from", resumed_from}};
}

Json list_images(ServiceApi& api) { return api.get("/v1/images")["items"]; }
Json show_image(ServiceApi& api, const std::string& id) { return api.get("/v1/images/" + segment(id)); }

Json download_image(ServiceApi& api, const std::string& id, const std::filesystem::path& out) {
  AtomicFile file(out, 0644);
  Hasher hasher(HashAlg::sha256);
  HttpRequest get{.method = "GET", .path = "/v1/images/" + segment(id) + "/content"};
  get.sink = [&](std::string_view data) {
    file.write(as_bytes(data));
    hasher.update(as_bytes(data));
  };
  api.http().call(get);
  if (to_hex(hasher.finish()) != id)
    throw Error(ExitCode::verification_failed, fmt::format("downloaded content does not hash to {}", id));
  std::uint64_t size = file.written();
  file.commit();
  return {{"id", id}, {"file", out.string()}, {"size", size}};
}

Json link_image_manifest(ServiceApi& api, const std::string& image, const std::string& manifest) {
  return api.post("/v1/images/" + segment(image) + "/manifest", {{"manifest", manifest}});
}

Json create_deployment(ServiceApi& api, const DeploymentRequest& request) {
  Json body = {{"group", request.group}, {"images", request.images}};
  if (request.manifest) body["manifest"] = *request.manifest;
  if (request.waves.size() == 1) body["rollout"] = request.waves[0];
  else body["rollout"] = request.waves;
  if (request.step_after) body["step_after"] = *request.step_after;
  if (request.halt_on_failure) body["halt_on_failure"] = *request.halt_on_failure;
  return api.post("/v1/deployments", body);
}
Json list_deployments(ServiceApi& api, const std::optional<std::string>& group) {
  return api.get("/v1/deployments" + (group ? "?group=" + url_encode(*group) : std::string()))["items"];
}
Json show_deployment(ServiceApi& api, const std::string& id) { return api.get("/v1/deployments/" + segment(id)); }
Json list_deployment_devices(ServiceApi& api, const std::string& id, const std::optional<std::string>& status) {
  return api.get("/v1/deployments/" + segment(id) + "/devices" + (status ? "?status=" + url_encode(*status) : std::string()))["items"];
}

bool deployment_settled(const Json& deployment) {
  auto state = deployment.value("state", std::string());
  return state == "completed" || state == "halted" || state == "aborted" || state == "superseded";
}

Json watch_deployment(ServiceApi& api, const std::string& id, int interval_ms,
                      const std::function<void(const Json&)>& on_change) {
  Json last;
  while (true) {
    Json view = show_deployment(api, id);
    Json compared = view;
    compared.erase("updated_at");
    if (compared != last) {
      on_change(view);
      last = std::move(compared);
    }
    if (deployment_settled(view)) return view;
    // Sleep in small steps so Ctrl-C is answered at once.
    for (int slept = 0; slept < interval_ms; slept += 50) {
      check_interrupted();
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(50, interval_ms - slept)));
    }
    check_interrupted();
  }
}

Json change_deployment(ServiceApi& api, const std::string& id, const std::string& action) {
  return api.post("/v1/deployments/" + segment(id) + "/" + action, Json::object());
}

}  // namespace kiln::transport
