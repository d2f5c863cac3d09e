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

constexpr const char* deployment_columns =
    "SELECT d.id, d.group_id, p.name || '/' || g.name, d.images, d.manifest, d.sequence, coalesce(d.waves, "
    "'[' || d.rollout || ']'), coalesce(d.wave, 1), coalesce(d.wave_started_at, strftime('%s', d.created_at)), "
    "coalesce(d.step_after, 0), d.halt_on_failure, d.halt_reason, coalesce(d.failure_baseline, 0), d.previous, "
    "d.state, d.created_at, d.updated_at "
    "FROM deployments d JOIN device_groups g ON g.id = d.group_id JOIN products p ON p.id = g.product_id ";

DeploymentRow read_row(Statement& q) {
  DeploymentRow row;
  row.id = q.text(0);
  row.group_id = q.text(1);
  row.group = q.text(2);
  row.images = Json::parse(q.text(3));
  row.manifest = q.optional_text(4);
  if (!q.is_null(5)) row.sequence = q.integer(5);
  for (auto& w : Json::parse(q.text(6))) row.waves.push_back(w.get<int>());
  row.wave = static_cast<int>(q.integer(7));
  row.wave_started_at = q.integer(8);
  row.step_after = q.integer(9);
  if (!q.is_null(10)) row.halt_on_failure = q.real(10);
  row.halt_reason = q.optional_text(11);
  row.failure_baseline = q.integer(12);
  row.previous = q.optional_text(13);
  row.state = q.text(14);
  row.created_at = q.text(15);
  row.updated_at = q.text(16);
  return row;
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void save(Db& db, const DeploymentRow& row) {
  db.prepare(
        "UPDATE deployments SET state = ?, wave = ?, wave_started_at = ?, halt_reason = ?, failure_baseline = ?, "
        "updated_at = ? WHERE id = ?")
      .bind(1, row.state)
      .bind(2, std::int64_t{row.wave})
      .bind(3, row.wave_started_at)
      .bind_optional(4, row.halt_reason)
      .bind(5, row.failure_baseline)
      .bind(6, now_iso8601())
      .bind(7, row.id)
      .run();
}

// One admitted device of a deployment: its wave and the last status it reported ("pending": none yet).
struct AdmittedDevice {
  std::string id;
  int wave = 0;
  std::string status, detail, updated_at, version;
};

// Calls `each` for every admitted device of the group; returns the number of devices in the group.
std::int64_t for_each_admitted(Db& db, const DeploymentRow& row,
                               const std::function<void(const AdmittedDevice&)>& each) {
  auto q = db.prepare(
      "SELECT d.id, dd.status, coalesce(dd.detail, ''), coalesce(dd.updated_at, ''), coalesce(d.version, '') "
      "FROM devices d LEFT JOIN deployment_devices dd ON dd.deployment_id = ? AND dd.device_id = d.id "
      "WHERE d.group_id = ? ORDER BY d.id");
  q.bind(1, row.id).bind(2, row.group_id);
  std::int64_t devices = 0;
  while (q.step()) {
    ++devices;
    AdmittedDevice device{q.text(0), 0,         q.is_null(1) ? std::string("pending") : q.text(1),
                          q.text(2), q.text(3), q.text(4)};
    device.wave = wave_of_bucket(row.waves, rollout_bucket(row.id, device.id));
    // A device outside the open waves that reported anyway (it was admitted before a wave change or a
    // group move) still counts where its bucket puts it, so nothing it reported goes missing.
    bool admitted = device.wave > 0 && (device.wave <= row.wave || device.status != "pending");
    if (admitted) each(device);
  }
  return devices;
}

// The group's devices by wave and what they reported for this deployment.
RolloutTally tally(Db& db, const DeploymentRow& row) {
  RolloutTally t;
  t.waves.resize(row.waves.size());
  auto q = db.prepare(
      "SELECT d.id, dd.status FROM devices d LEFT JOIN deployment_devices dd ON dd.deployment_id = ? AND "
      "dd.device_id = d.id WHERE d.group_id = ?");
  q.bind(1, row.id).bind(2, row.group_id);
  while (q.step()) {
    ++t.devices;
    int wave = wave_of_bucket(row.waves, rollout_bucket(row.id, q.text(0)));
    if (wave == 0) continue;
    auto& w = t.waves[static_cast<std::size_t>(wave - 1)];
    ++w.devices;
    if (!q.is_null(1)) ++w.reported[q.text(1)];
  }
  return t;
}

// The deployment as the rules have it now, and its counts; `store` saves a change (GETs pass false: a read
// never writes, it shows what the next write will store).
AdmittedCounts evaluate(Db& db, DeploymentRow& row, bool store = true) {
  auto t = tally(db, row);
  Rollout& rollout = row;
  Rollout next = decide_rollout(rollout, t, unix_now());
  if (next != rollout) {
    rollout = next;
    if (store) save(db, row);
  }
  return admitted_counts(row, t);
}

Json counts_json(const std::map<std::string, std::int64_t>& counts) {
  Json out = Json::object();
  out["pending"] = counts.at("pending");
  for (auto& s : agent_statuses()) out[s] = counts.at(s);
  return out;
}

Json deployment_json(const DeploymentRow& row, const AdmittedCounts& t) {
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
          {"images", row.images},
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
  auto row = load_deployment(call.db, call.who.tenant_id, id);
  auto t = evaluate(call.db, row, false);
  return deployment_json(row, t);
}

Reply transition(Call& call, const char* to, std::initializer_list<const char*> from) {
  auto& id = call.params[0];
  auto row = load_deployment(call.db, call.who.tenant_id, id);
  auto t = evaluate(call.db, row);
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
  save(call.db, row);
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
  auto q = call.db.prepare("SELECT complete, size FROM images WHERE tenant_id = ? AND sha256 = ?");
  q.bind(1, call.who.tenant_id).bind(2, sha);
  if (!q.step()) throw ApiError{404, "not_found", fmt::format("{} {} not found", what, sha)};
  if (q.integer(0) == 0) throw ApiError{409, "incomplete", fmt::format("{} {} is still being uploaded", what, sha)};
  return q.integer(1);
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

DeploymentRow load_deployment(Db& db, std::int64_t tenant_id, const std::string& id) {
  auto q = db.prepare(std::string(deployment_columns) + "WHERE d.id = ? AND d.tenant_id = ?");
  q.bind(1, id).bind(2, tenant_id);
  if (!q.step()) throw ApiError{404, "not_found", fmt::format("deployment {} not found", id)};
  return read_row(q);
}

void evaluate_deployment(Db& db, DeploymentRow& row, bool only_when_a_wave_is_due) {
  if (only_when_a_wave_is_due && !wave_due(row, unix_now())) return;
  evaluate(db, row);
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
      auto q =
          call.db.prepare("SELECT manifest FROM images WHERE tenant_id = ? AND sha256 = ? AND manifest IS NOT NULL");
      q.bind(1, call.who.tenant_id).bind(2, image.get<std::string>());
      if (q.step()) {
        manifest = q.text(0);
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

  Transaction tx(call.db);
  // The deployment devices ran before this one (the target of a revert after an abort).
  auto prev = call.db.prepare(
      "SELECT id FROM deployments WHERE group_id = ? AND state != 'aborted' ORDER BY rowid DESC LIMIT 1");
  prev.bind(1, group);
  std::optional<std::string> previous;
  if (prev.step()) previous = prev.text(0);
  std::string now = now_iso8601();
  call.db
      .prepare(
          "UPDATE deployments SET state = 'superseded', updated_at = ? WHERE group_id = ? AND state IN "
          "('active', 'paused', 'halted')")
      .bind(1, now)
      .bind(2, group)
      .run();
  std::string id = random_id("dep_");
  Json waves_json = waves;
  auto insert = call.db.prepare(
      "INSERT INTO deployments (id, tenant_id, group_id, images, rollout, state, created_at, updated_at, manifest, "
      "sequence, waves, wave, wave_started_at, step_after, halt_on_failure, failure_baseline, previous) "
      "VALUES (?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?, 1, ?, ?, ?, 0, ?)");
  insert.bind(1, id)
      .bind(2, call.who.tenant_id)
      .bind(3, group)
      .bind(4, images_it->dump())
      .bind(5, std::int64_t{waves.back()})
      .bind(6, now)
      .bind(7, now)
      .bind_optional(8, manifest);
  if (sequence)
    insert.bind(9, *sequence);
  else
    insert.bind_null(9);
  insert.bind(10, waves_json.dump()).bind(11, unix_now()).bind(12, step_after);
  if (halt)
    insert.bind(13, *halt);
  else
    insert.bind_null(13);
  insert.bind_optional(14, previous).run();
  tx.commit();
  return {201, show(call, id)};
}

Reply list_deployments(Call& call) {
  auto group = call.query_value("group");
  std::string sql = "SELECT id FROM deployments WHERE tenant_id = ?";
  if (group) sql += " AND group_id = ?";
  auto q = call.db.prepare(sql + " ORDER BY rowid");
  q.bind(1, call.who.tenant_id);
  if (group) q.bind(2, resolve_group_id(call, *group));
  std::vector<std::string> ids;
  while (q.step()) ids.push_back(q.text(0));
  Json items = Json::array();
  for (auto& id : ids) items.push_back(show(call, id));
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
  auto row = load_deployment(call.db, call.who.tenant_id, call.params[0]);
  evaluate(call.db, row, false);
  auto status = call.query_value("status");
  if (status && *status != "pending" && *status != "failures") {
    auto& known = agent_statuses();
    if (std::find(known.begin(), known.end(), *status) == known.end())
      throw ApiError{400, "invalid_request",
                     "status must be pending, failures or an agent status (installed, failed, ...)"};
  }
  Json items = Json::array();
  for_each_admitted(call.db, row, [&](const AdmittedDevice& device) {
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
  call.db.prepare("UPDATE images SET manifest = ? WHERE tenant_id = ? AND sha256 = ?")
      .bind(1, manifest)
      .bind(2, call.who.tenant_id)
      .bind(3, image)
      .run();
  return {200, Json{{"id", image}, {"manifest", manifest}, {"sequence", facts.sequence}}};
}

}  // namespace kiln::service
