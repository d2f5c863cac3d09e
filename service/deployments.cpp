// Deployments: a group, images and a SUIT manifest, rolled out in waves that open on a timer and halt by
// themselves past a failure threshold. States: active, paused, halted, completed, aborted, superseded.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <functional>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "manifests/suit_envelope.hpp"
#include "manifests/suit_verify.hpp"
#include "service/handlers.hpp"
#include "service/rollout.hpp"

namespace kiln::service {
namespace {

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void save(Store& store, const Deployment& row) { store.save_rollout(row.id, row, now_iso8601()); }

// One admitted device of a deployment: its wave and the last status it reported ("pending": none yet).
struct AdmittedDevice {
  std::string id;
  int wave = 0;
  std::string status, detail, updated_at, version;
};

// Calls `each` for every admitted device of the group.
void for_each_admitted(Store& store, const Deployment& row, const std::function<void(const AdmittedDevice&)>& each) {
  store.for_each_deployment_device(row, [&](const DeploymentDevice& d) {
    AdmittedDevice device{d.id, 0, d.status.value_or("pending"), d.detail, d.updated_at, d.version};
    device.wave = wave_of_bucket(row.waves, rollout_bucket(row.id, device.id));
    // A device outside the open waves that reported anyway (it was admitted before a wave change or a
    // group move) still counts where its bucket puts it, so nothing it reported goes missing.
    bool admitted = device.wave > 0 && (device.wave <= row.wave || device.status != "pending");
    if (admitted) each(device);
  });
}

// The deployment as the rules have it now, and its counts; `write` saves a change (GETs pass false: a read
// never writes, it shows what the next write will store).
AdmittedCounts evaluate(Store& store, Deployment& row, const RolloutTally& t, bool write) {
  Rollout& rollout = row;
  Rollout next = decide_rollout(rollout, t, unix_now());
  if (next != rollout) {
    rollout = next;
    if (write) save(store, row);
  }
  return admitted_counts(row, t);
}

AdmittedCounts evaluate(Store& store, Deployment& row, bool write = true) {
  return evaluate(store, row, store.rollout_tally(row), write);
}

Json counts_json(const std::map<std::string, std::int64_t>& counts) {
  Json out = Json::object();
  out["pending"] = counts.at("pending");
  for (auto& s : agent_statuses()) out[s] = counts.at(s);
  return out;
}

Json deployment_json(const Deployment& row, const AdmittedCounts& t) {
  Json waves = Json::array();
  for (std::size_t i = 0; i < row.waves.size(); ++i) {
    int number = static_cast<int>(i + 1);
    waves.push_back(Json{{"wave", number},
                         {"percent", row.waves[i]},
                         {"state", number < row.wave    ? "done"
                                   : number == row.wave ? "open"
                                                        : "pending"},
                         {"admitted", t.waves[i].admitted},
                         {"status", counts_json(t.waves[i].status)}});
  }
  bool stepping = row.state == "active" && row.wave < static_cast<int>(row.waves.size()) && row.step_after > 0;
  Json halt = row.halt_on_failure ? Json(*row.halt_on_failure) : Json(nullptr);
  return {{"id", row.id},
          {"group", row.group},
          {"state", row.state},
          {"halt_reason", row.halt_reason ? Json(*row.halt_reason) : Json(nullptr)},
          {"images", Json(row.images)},
          {"manifest", row.manifest ? Json(*row.manifest) : Json(nullptr)},
          {"sequence", row.sequence ? Json(*row.sequence) : Json(nullptr)},
          {"rollout", row.waves[static_cast<std::size_t>(std::max(row.wave, 1) - 1)]},
          {"wave", row.wave},
          {"step_after", row.step_after},
          {"next_wave_at", stepping ? Json(iso8601(row.wave_started_at + row.step_after)) : Json(nullptr)},
          {"halt_on_failure", halt},
          {"previous", row.previous ? Json(*row.previous) : Json(nullptr)},
          {"devices", t.devices},
          {"admitted", t.admitted},
          {"failures", t.failures},
          {"failures_forgiven", row.failure_baseline},
          {"device_status", counts_json(t.status)},
          {"waves", waves},
          {"created_at", row.created_at},
          {"updated_at", row.updated_at}};
}

Json show(Call& call, const std::string& id) {
  auto row = load_deployment(call.store, call.who.tenant_id, id);
  auto t = evaluate(call.store, row, false);
  return deployment_json(row, t);
}

Reply transition(Call& call, const char* to, std::initializer_list<const char*> from) {
  auto& id = call.params[0];
  auto row = load_deployment(call.store, call.who.tenant_id, id);
  auto t = evaluate(call.store, row);
  if (row.state == to) return {200, deployment_json(row, t)};
  bool allowed = false;
  for (auto* f : from) allowed = allowed || row.state == f;
  if (!allowed)
    throw ApiError{409, "conflict", fmt::format("deployment {} is {}: it cannot become {}", id, row.state, to)};
  if (std::string_view(to) == "active") {
    // A resume forgives the failures seen so far and gives the open wave a fresh step-after period.
    row.failure_baseline = t.failures;
    row.halt_reason.reset();
    row.wave_started_at = unix_now();
  }
  row.state = to;
  save(call.store, row);
  return {200, show(call, id)};
}

// Waves from "rollout": an integer percentage (one wave) or an array of increasing percentages.
std::vector<int> parse_waves(const Json& body) {
  auto it = body.find("rollout");
  if (it == body.end() || it->is_null()) return {100};
  const char* shape = "field 'rollout' must be a percentage 1..100 or an array of increasing percentages";
  std::vector<int> waves;
  if (it->is_number_integer()) {
    waves.push_back(0);
    auto v = it->get<std::int64_t>();
    if (v < 1 || v > 100) throw ApiError{400, "invalid_request", "rollout must be 1..100"};
    waves[0] = static_cast<int>(v);
    return waves;
  }
  if (!it->is_array() || it->empty() || it->size() > 100) throw ApiError{400, "invalid_request", shape};
  for (auto& w : *it) {
    if (!w.is_number_integer()) throw ApiError{400, "invalid_request", shape};
    auto v = w.get<std::int64_t>();
    if (v < 1 || v > 100 || (!waves.empty() && v <= waves.back())) throw ApiError{400, "invalid_request", shape};
    waves.push_back(static_cast<int>(v));
  }
  return waves;
}

std::string checked_blob_id(const std::string& text, const char* what) {
  bool ok = text.size() == 64 && text.find_first_not_of("0123456789abcdef") == std::string::npos;
  if (!ok) throw ApiError{400, "invalid_request", fmt::format("{} must be a SHA-256: 64 lower-case hex digits", what)};
  return text;
}

// A complete blob of the tenant (image or manifest): its size; ApiError 404/409 otherwise.
std::int64_t complete_blob(Call& call, const std::string& sha, const char* what) {
  auto blob = call.store.find_image(call.who.tenant_id, sha);
  if (!blob) throw ApiError{404, "not_found", fmt::format("{} {} not found", what, sha)};
  if (!blob->complete) throw ApiError{409, "incomplete", fmt::format("{} {} is still being uploaded", what, sha)};
  return blob->size;
}

struct ManifestFacts {
  std::uint64_t sequence = 0;
  std::vector<suit::DeclaredImage> images;
};

// No SUIT envelope is larger (the board agent refuses bigger ones too): a larger blob is not read into memory.
constexpr std::int64_t max_manifest_size = 1 << 20;

ManifestFacts read_manifest(Call& call, const std::string& sha) {
  if (auto size = complete_blob(call, sha, "manifest"); size > max_manifest_size)
    throw ApiError{422, "manifest_invalid",
                   fmt::format("blob {} is not a SUIT envelope: it is {} bytes, larger than a manifest may be ({} bytes)",
                               sha, size, max_manifest_size)};
  Bytes bytes;
  try {
    bytes = read_file(blob_path(call.config, call.who.tenant_id, sha));
  } catch (const Error&) {
    throw ApiError{500, "internal", fmt::format("cannot read the content of manifest {}", sha)};
  }
  try {
    auto envelope = suit::parse_envelope(bytes);
    return {suit::sequence_number(suit::manifest(envelope)), suit::declared_images(envelope)};
  } catch (const Error& e) {
    throw ApiError{422, "manifest_invalid", fmt::format("blob {} is not a SUIT envelope: {}", sha, e.what())};
  }
}

// The manifest must describe every image of the deployment (SHA-256 digest, and size where it declares one).
void check_manifest_covers(Call& call, const std::string& manifest, const ManifestFacts& facts, const Json& images) {
  for (auto& image : images) {
    auto sha = image.get<std::string>();
    auto size = complete_blob(call, sha, "image");
    bool found = std::any_of(facts.images.begin(), facts.images.end(), [&](const suit::DeclaredImage& d) {
      return d.digest.algorithm == suit::digest_sha256 && to_hex(d.digest.bytes) == sha &&
             (!d.size || static_cast<std::int64_t>(*d.size) == size);
    });
    if (!found)
      throw ApiError{422, "manifest_mismatch",
                     fmt::format("manifest {} does not describe image {} (its SHA-256 and size): upload the "
                                 "manifest made for this image",
                                 manifest, sha)};
  }
}

}  // namespace

std::filesystem::path blob_path(const ServiceConfig& config, std::int64_t tenant_id, const std::string& sha) {
  return config.image_dir / std::to_string(tenant_id) / sha;
}

Deployment load_deployment(Store& store, std::int64_t tenant_id, const std::string& id) {
  auto row = store.find_deployment(tenant_id, id);
  if (!row) throw ApiError{404, "not_found", fmt::format("deployment {} not found", id)};
  return std::move(*row);
}

void evaluate_deployment(Store& store, Deployment& row, bool only_when_a_wave_is_due) {
  if (only_when_a_wave_is_due && !wave_due(row, unix_now())) return;
  evaluate(store, row);
}

Reply create_deployment(Call& call) {
  auto body = parse_object(call.request.body);
  auto group = resolve_group_id(call, required_string(body, "group", 260));
  auto images_it = body.find("images");
  if (images_it == body.end() || !images_it->is_array() || images_it->empty() || images_it->size() > 16)
    throw ApiError{400, "invalid_request", "field 'images' must be an array of 1..16 image IDs"};
  for (auto& image : *images_it) {
    if (!image.is_string()) throw ApiError{400, "invalid_request", "image IDs are strings"};
    complete_blob(call, image.get<std::string>(), "image");
  }
  auto waves = parse_waves(body);
  std::int64_t step_after = 0;
  if (auto it = body.find("step_after"); it != body.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<std::int64_t>() < 1 || it->get<std::int64_t>() > 366 * 86400)
      throw ApiError{400, "invalid_request", "field 'step_after' must be a number of seconds, 1..31622400"};
    step_after = it->get<std::int64_t>();
  }
  if (waves.size() > 1 && step_after == 0)
    throw ApiError{400, "invalid_request", "a rollout of several waves needs 'step_after' (seconds between waves)"};
  std::optional<double> halt;
  if (auto it = body.find("halt_on_failure"); it != body.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() < 0 || it->get<double>() > 100)
      throw ApiError{400, "invalid_request", "field 'halt_on_failure' must be a percentage 0..100"};
    halt = it->get<double>();
  }

  // The manifest: named, or the one linked to the first image at upload (kiln image upload --manifest).
  auto manifest = optional_string(body, "manifest", 64);
  if (manifest) {
    checked_blob_id(*manifest, "field 'manifest'");
  } else {
    for (auto& image : *images_it) {
      auto record = call.store.find_image(call.who.tenant_id, image.get<std::string>());
      if (record && record->manifest) {
        manifest = record->manifest;
        break;
      }
    }
  }
  std::optional<std::int64_t> sequence;
  if (manifest) {
    auto facts = read_manifest(call, *manifest);
    check_manifest_covers(call, *manifest, facts, *images_it);
    sequence = static_cast<std::int64_t>(facts.sequence);
  }

  auto tx = call.store.begin();
  // The deployment devices ran before this one (the target of a revert after an abort).
  Deployment row;
  row.previous = call.store.newest_deployment(call.who.tenant_id, group, true);
  std::string now = now_iso8601();
  std::string id = random_id("dep_");
  row.id = id;
  row.group_id = group;
  for (auto& image : *images_it) row.images.push_back(image.get<std::string>());
  row.manifest = manifest;
  row.sequence = sequence;
  row.state = "active";
  row.waves = waves;
  row.wave = 1;
  row.wave_started_at = unix_now();
  row.step_after = step_after;
  row.halt_on_failure = halt;
  row.created_at = row.updated_at = now;
  call.store.insert_deployment(call.who.tenant_id, row, now);
  tx->commit();
  return {201, show(call, id)};
}

Reply list_deployments(Call& call) {
  std::optional<std::string> group;
  if (auto ref = call.query_value("group")) group = resolve_group_id(call, *ref);
  // Two reads for the whole list: the deployments and their tallies.
  auto tallies = call.store.rollout_tallies(call.who.tenant_id, group);
  Json items = Json::array();
  for (auto& row : call.store.list_deployments(call.who.tenant_id, group)) {
    auto t = evaluate(call.store, row, tallies[row.id], false);
    items.push_back(deployment_json(row, t));
  }
  return {200, Json{{"items", items}}};
}

Reply show_deployment(Call& call) {
  return {200, show(call, call.params[0])};
}
Reply pause_deployment(Call& call) {
  return transition(call, "paused", {"active", "completed"});
}
Reply resume_deployment(Call& call) {
  return transition(call, "active", {"paused", "halted"});
}
Reply abort_deployment(Call& call) {
  return transition(call, "aborted", {"active", "paused", "halted", "completed"});
}

Reply list_deployment_devices(Call& call) {
  auto row = load_deployment(call.store, call.who.tenant_id, call.params[0]);
  evaluate(call.store, row, false);
  auto status = call.query_value("status");
  if (status && *status != "pending" && *status != "failures") {
    auto& known = agent_statuses();
    if (std::find(known.begin(), known.end(), *status) == known.end())
      throw ApiError{400, "invalid_request",
                     "status must be pending, failures or an agent status (installed, failed, ...)"};
  }
  Json items = Json::array();
  for_each_admitted(call.store, row, [&](const AdmittedDevice& device) {
    if (status && (*status == "failures" ? !is_failure_status(device.status) : device.status != *status)) return;
    items.push_back(Json{{"device", device.id},
                         {"wave", device.wave},
                         {"status", device.status},
                         {"detail", device.detail},
                         {"version", device.version.empty() ? Json(nullptr) : Json(device.version)},
                         {"updated_at", device.updated_at.empty() ? Json(nullptr) : Json(device.updated_at)}});
  });
  return {200, Json{{"items", items}}};
}

Reply link_image_manifest(Call& call) {
  auto body = parse_object(call.request.body);
  auto image = checked_blob_id(call.params[0], "an image ID");
  auto manifest = checked_blob_id(required_string(body, "manifest", 64), "field 'manifest'");
  complete_blob(call, image, "image");
  auto facts = read_manifest(call, manifest);
  check_manifest_covers(call, manifest, facts, Json::array({image}));
  call.store.link_manifest(call.who.tenant_id, image, manifest);
  return {200, Json{{"id", image}, {"manifest", manifest}, {"sequence", facts.sequence}}};
}

}  // namespace kiln::service
