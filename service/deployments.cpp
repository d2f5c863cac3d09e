// Deployments: a group, images and a SUIT manifest, rolled out in waves that open on a timer and halt by
// themselves past a failure threshold. States: active, paused, halted, completed, aborted, superseded.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <functional>

#include "core/base64.hpp"
#include "core/bytes.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "core/time.hpp"
#include "manifests/suit_envelope.hpp"
#include "manifests/suit_verify.hpp"
#include "service/handlers.hpp"
#include "service/rollout.hpp"
#include "service/rollout_policy.hpp"
#include "signing/image_delivery.hpp"
#include "signing/key_info.hpp"
#include "signing/mcuboot_image.hpp"
#include "signing/mcuboot_sign.hpp"
#include "signing/signer.hpp"

namespace kiln::service {
namespace {

void save(Store& store, const Deployment& row) { store.save_rollout(row.id, row, now_iso8601()); }

// One admitted device of a deployment: its wave and the last status it reported (pending: none yet).
struct AdmittedDevice {
  std::string id;
  int wave = 0;
  DeviceStatus status = DeviceStatus::pending;
  std::string detail, updated_at, version, last_seen;
  std::int64_t attempt = 1;
  std::optional<std::int64_t> retry_at;
  std::optional<std::string> time_zone;
};

// An admitted device an active deployment holds outside its maintenance windows now: when the next opens
// (nullopt: not held by a window).
std::optional<std::optional<std::int64_t>> held_by_window(const Deployment& row, const AdmittedDevice& d,
                                                          std::int64_t now) {
  if (row.state != DeploymentState::active || row.policy.windows.empty()) return std::nullopt;
  DeviceProgress progress{d.status, d.attempt, d.retry_at, d.time_zone};
  auto decision = offer_decision(row, d.wave, progress, now);
  if (decision.hold != Hold::window) return std::nullopt;
  return decision.until;
}

// Calls `each` for every admitted device of the group.
void for_each_admitted(Store& store, const Deployment& row, const std::function<void(const AdmittedDevice&)>& each) {
  store.for_each_deployment_device(row, [&](const DeploymentDevice& d) {
    AdmittedDevice device{d.id,         0,          DeviceStatus::pending, d.detail,
                          d.updated_at, d.version,  d.last_seen,           d.attempt,
                          d.retry_at,   d.time_zone};
    if (d.status) device.status = parse_status(*d.status).value_or(DeviceStatus::pending);
    device.wave = wave_of_bucket(row.waves, rollout_bucket(row.id, device.id));
    // A device outside the open waves that reported anyway (it was admitted before a wave change or a
    // group move) still counts where its bucket puts it, so nothing it reported goes missing.
    bool admitted = device.wave > 0 && (device.wave <= row.wave || device.status != DeviceStatus::pending);
    if (admitted) each(device);
  });
}

// The deployment as the rules have it now, and its counts; `write` saves a change (GETs pass false: a read
// never writes, it shows what the next write will store).
AdmittedCounts evaluate(Store& store, Deployment& row, const RolloutTally& t, bool write) {
  Rollout& rollout = row;
  Rollout next = decide_rollout(rollout, t, unix_now());
  if (next != rollout) {
    bool halts = next.state == DeploymentState::halted && rollout.state != DeploymentState::halted;
    rollout = next;
    if (write) {
      save(store, row);
      // The rules halted it: one audit entry, in the transaction that stores the halt. Writers hold the
      // store's write lock, so of several instances seeing the failure, exactly one halts it.
      if (halts && row.tenant_id != 0) {
        AuditEntry entry;
        entry.at = now_iso8601();
        entry.actor = "kiln-service";
        entry.role = "service";
        entry.action = "deployment.halt";
        entry.target = row.id;
        store.add_audit(row.tenant_id, entry);
      }
    }
  }
  return admitted_counts(row, t);
}

// Records timed_out for each device whose last report is older than its phase's timeout (writes only;
// while the deployment is still offered or devices may still be installing it).
void apply_timeouts(Store& store, const Deployment& row) {
  if (row.policy.timeouts == Timeouts{}) return;
  if (!is_open(row.state)) return;
  auto now = unix_now();
  std::vector<std::pair<std::string, std::string>> expired;
  store.for_each_deployment_device(row, [&](const DeploymentDevice& d) {
    if (!d.status) return;
    auto since = unix_seconds(d.updated_at);
    if (!since) return;
    if (auto detail = device_timeout(row.policy.timeouts, *d.status, *since, now)) expired.emplace_back(d.id, *detail);
  });
  for (auto& [device, detail] : expired)
    store.record_status(row.id, device, status_name(DeviceStatus::timed_out), detail, now_iso8601(), std::nullopt);
}

AdmittedCounts evaluate(Store& store, Deployment& row, bool write = true) {
  if (write) apply_timeouts(store, row);
  return evaluate(store, row, store.rollout_tally(row), write);
}

Json counts_json(const std::map<std::string, std::int64_t>& counts) {
  Json out = Json::object();
  auto pending = status_name(DeviceStatus::pending);
  out[pending] = counts.at(pending);
  for (auto& s : rollout_statuses()) out[s] = counts.at(s);
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
  bool stepping = row.state == DeploymentState::active && row.wave < static_cast<int>(row.waves.size()) &&
                  row.step_after > 0 && !row.policy.wave.success_percent;
  Json halt = row.halt_on_failure ? Json(*row.halt_on_failure) : Json("never");
  Json out = {{"id", row.id},
              {"group", row.group},
              {"state", state_name(row.state)},
              {"halt_reason", row.halt_reason ? Json(*row.halt_reason) : Json(nullptr)},
              {"pause_reason", row.pause_reason ? Json(*row.pause_reason) : Json(nullptr)},
              {"awaiting_approval", row.awaiting_approval},
              {"images", Json(row.images)},
              {"manifest", row.manifest ? Json(*row.manifest) : Json(nullptr)},
              {"sequence", row.sequence ? Json(*row.sequence) : Json(nullptr)},
              {"trust_version", row.trust_version ? Json(*row.trust_version) : Json(nullptr)},
              {"carries", row.trust_version ? "trust_update" : "release"},
              {"rollout", row.waves[static_cast<std::size_t>(std::max(row.wave, 1) - 1)]},
              {"wave", row.wave},
              {"step_after", row.step_after},
              {"next_wave_at", stepping ? Json(iso8601(row.wave_started_at + row.step_after)) : Json(nullptr)},
              {"halt_on_failure", halt},
              {"halt_min_executed", row.halt_min_executed},
              {"executed", t.executed()},
              {"previous", row.previous ? Json(*row.previous) : Json(nullptr)},
              {"devices", t.devices},
              {"admitted", t.admitted},
              {"failures", t.failures},
              {"failures_forgiven", row.failure_baseline},
              {"device_status", counts_json(t.status)},
              {"waves", waves},
              {"created_at", row.created_at},
              {"updated_at", row.updated_at}};
  // The controls (null or empty when not set), after the halt threshold they add to.
  auto controls = policy_json(row.policy);
  for (auto& [key, value] : controls.items()) out[key] = value;
  if (row.policy.rate.base_per_minute > 0) {
    int level = row.rate_steps.empty() ? 0 : row.rate_steps.back().level;
    out["rate_now"] = Json{{"per_minute", rate_per_minute(row.policy.rate, level)},
                           {"notified", t.admitted - t.status.at(status_name(DeviceStatus::pending))},
                           {"allowed", rate_allowance(row.policy.rate, row.rate_steps, unix_now())}};
  }
  return out;
}

Json show(Call& call, const std::string& id) {
  auto row = load_deployment(call.store, call.who.tenant_id, id);
  auto t = evaluate(call.store, row, false);
  Json out = deployment_json(row, t);
  // Devices it waits for that never checked in since it was created; an empty group says so.
  Json silent = Json::array();
  std::int64_t count = 0;
  for_each_admitted(call.store, row, [&](const AdmittedDevice& d) {
    if (d.status != DeviceStatus::pending || (!d.last_seen.empty() && d.last_seen >= row.created_at)) return;
    if (++count <= 100) silent.push_back(d.id);
  });
  out["silent_devices"] = silent;
  out["silent"] = count;
  // Maintenance windows: when the next opens in the deployment's zone, and the devices held now.
  if (!row.policy.windows.empty()) {
    auto now = unix_now();
    auto next = next_window_open(row.policy.windows, row.policy.time_zone, now);
    std::int64_t waiting = 0;
    for_each_admitted(call.store, row, [&](const AdmittedDevice& d) {
      if (held_by_window(row, d, now)) ++waiting;
    });
    out["window_open"] = next && *next == now;
    out["next_window_at"] = next ? Json(iso8601(*next)) : Json(nullptr);
    out["waiting_window"] = waiting;
  }
  bool open = is_open(row.state);
  out["attention"] = !open ? Json(nullptr)
                     : t.devices == 0
                         ? Json(fmt::format("group {} has no devices: nothing will install it", row.group))
                     : count > 0 ? Json(fmt::format("{} admitted device{} never checked in since it was created: it "
                                                    "cannot complete without them (see silent_devices)",
                                                    count, count == 1 ? "" : "s"))
                                 : Json(nullptr);
  return out;
}

Reply transition(Call& call, DeploymentState to, std::initializer_list<DeploymentState> from) {
  auto& id = call.params[0];
  auto row = load_deployment(call.store, call.who.tenant_id, id);
  auto t = evaluate(call.store, row);
  if (row.state == to) return {200, deployment_json(row, t)};
  bool allowed = false;
  for (auto f : from) allowed = allowed || row.state == f;
  if (!allowed)
    throw ApiError{409, "conflict",
                   fmt::format("deployment {} is {}: it cannot become {}", id, state_name(row.state), state_name(to))};
  if (to == DeploymentState::active) {
    // A resume forgives the failures seen so far and gives the open wave a fresh step-after period; after
    // a wave met its success condition with "then": "pause", it opens the next wave.
    Rollout& rollout = row;
    rollout = resume_rollout(rollout, call.store.rollout_tally(row), unix_now());
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
    if (v < 1 || v > 100) throw ApiError{400, "invalid_request", "field 'rollout' must be a percentage 1..100"};
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

// The rollout part of a create request; ApiError 400 naming the field for bad input.
struct RolloutOptions {
  std::vector<int> waves;
  std::int64_t step_after = 0;
  std::optional<double> halt_on_failure = default_halt_percent;
  std::int64_t halt_min_executed = default_halt_min_executed;
  RolloutPolicy policy;
};

RolloutOptions parse_rollout_options(const Json& body) {
  RolloutOptions o;
  o.waves = parse_waves(body);
  if (auto it = body.find("step_after"); it != body.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<std::int64_t>() < 1 || it->get<std::int64_t>() > 366 * 86400)
      throw ApiError{400, "invalid_request", "field 'step_after' must be a number of seconds, 1..31622400"};
    o.step_after = it->get<std::int64_t>();
  }
  o.policy = parse_policy(body);
  if (o.waves.size() > 1 && o.step_after == 0 && !o.policy.wave.success_percent)
    throw ApiError{400, "invalid_request",
                   "field 'step_after' is required for a rollout of several waves (seconds between waves), unless "
                   "field 'wave_success' opens them"};
  // Absent: the default threshold. "never" (or null) turns halting off, and must be said.
  if (auto it = body.find("halt_on_failure"); it != body.end()) {
    if (it->is_null() || (it->is_string() && it->get<std::string>() == "never"))
      o.halt_on_failure.reset();
    else if (!it->is_number() || it->get<double>() < 0 || it->get<double>() > 100)
      throw ApiError{400, "invalid_request", "field 'halt_on_failure' must be a percentage 0..100 or \"never\""};
    else
      o.halt_on_failure = it->get<double>();
  }
  if (auto it = body.find("halt_min_executed"); it != body.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<std::int64_t>() < 1 || it->get<std::int64_t>() > 1000000)
      throw ApiError{400, "invalid_request", "field 'halt_min_executed' must be a number of devices, 1..1000000"};
    o.halt_min_executed = it->get<std::int64_t>();
  }
  return o;
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
    // An encrypted image may be described without its content-key TLV: what every device's wrap has in common
    // (docs/encrypted-delivery.md).
    if (!found) {
      std::optional<mcuboot::KeylessDigest> keyless;
      try {
        keyless = mcuboot::keyless_digest(blob_path(call.config, call.who.tenant_id, sha));
      } catch (const Error&) {
      }
      if (keyless)
        found = std::any_of(facts.images.begin(), facts.images.end(), [&](const suit::DeclaredImage& d) {
          return d.digest.algorithm == suit::digest_sha256 && d.digest.bytes == keyless->sha256 &&
                 (!d.size || *d.size == keyless->size);
        });
    }
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
  row->tenant_id = tenant_id;
  return std::move(*row);
}

RevertTarget revert_target(Store& store, std::int64_t tenant_id, const Deployment& aborted, const std::string& device) {
  auto took = store.deployment_device(aborted.id, device);
  if (took && took->previous_manifest) {
    if (aborted.manifest && *took->previous_manifest == *aborted.manifest) return {};
    auto id = store.deployment_with_manifest(tenant_id, aborted.group_id, *took->previous_manifest);
    if (id) return {store.find_deployment(tenant_id, *id), ""};
    return {std::nullopt, fmt::format("the manifest it ran before ({}) was never deployed by this service, so it "
                                      "cannot be offered back",
                                      took->previous_manifest->substr(0, 12))};
  }
  // No digest from its agent: the deployment it last reported installed, before this one.
  std::optional<Deployment> best;
  std::string best_at;
  for (auto& d : store.list_deployments(tenant_id, aborted.group_id)) {
    if (d.id == aborted.id) break;  // in creation order: only the ones before
    if (!d.manifest) continue;
    auto dd = store.deployment_device(d.id, device);
    if (!dd || !status_is(dd->status, DeviceStatus::installed)) continue;
    if (took && !took->started_at.empty() && dd->updated_at > took->started_at) continue;
    if (!best || dd->updated_at >= best_at) {
      best = d;
      best_at = dd->updated_at;
    }
  }
  if (best) return {best, ""};
  return {std::nullopt, "the service does not know what it ran before (its agent reported no manifest digest and "
                        "no earlier deployment installed)"};
}

bool runs_aborted(Store& store, const Deployment& aborted, const std::string& device,
                  const std::optional<std::string>& manifest_digest, const RevertTarget& target) {
  if (manifest_digest) return aborted.manifest && *manifest_digest == *aborted.manifest;
  auto took = store.deployment_device(aborted.id, device);
  if (!took || !status_is(took->status, DeviceStatus::installed)) return false;
  if (target.to) {
    auto back = store.deployment_device(target.to->id, device);
    if (back && status_is(back->status, DeviceStatus::installed) && back->updated_at > took->updated_at)
      return false;  // it reported the revert installed (later: timestamps are whole seconds)
  }
  return true;
}

bool evaluate_deployment(Store& store, Deployment& row, bool only_when_a_wave_is_due) {
  // A check-in looks when a wave is due by its timer, or may open on success or be paused by a control.
  if (only_when_a_wave_is_due && !wave_due(row, unix_now()) && row.policy == RolloutPolicy{}) return false;
  evaluate(store, row);
  return true;
}

std::vector<std::string> leave_open_deployments(Store& store, std::int64_t tenant_id, const std::string& device_id,
                                                DeviceStatus status, const std::string& detail,
                                                const std::function<void()>& leave) {
  auto identity = store.device_identity(device_id);
  auto now = now_iso8601();
  std::vector<Deployment> left;
  if (identity && identity->group_id) {
    for (auto& row : store.list_deployments(tenant_id, *identity->group_id)) {
      if (!is_open(row.state)) continue;
      auto stored = store.reported_status(row.id, device_id);
      auto reported = stored ? parse_status(*stored) : std::nullopt;
      if (reported &&
          (reported == DeviceStatus::installed || left_deployment(*reported) || is_failure_status(*reported)))
        continue;
      store.record_status(row.id, device_id, status_name(status), detail, now, std::nullopt);
      left.push_back(row);
    }
  }
  // The device leaves (its group, its tenant, or revoked) before the deployments it left are evaluated again.
  leave();
  std::vector<std::string> ids;
  for (auto& row : left) {
    evaluate_deployment(store, row);
    ids.push_back(row.id);
  }
  return ids;
}

namespace {

// One check of a deployment before any device sees it (docs/service.md, "Checks at creation").
struct Check {
  std::string name;
  bool passed = true;
  std::string detail;
};

struct Checks {
  std::vector<Check> list;
  void pass(const std::string& name, const std::string& detail) { list.push_back({name, true, detail}); }
  void fail(const std::string& name, const std::string& detail) { list.push_back({name, false, detail}); }
  bool passed() const {
    return std::all_of(list.begin(), list.end(), [](const Check& c) { return c.passed; });
  }
  std::string reasons() const {
    std::string out;
    for (auto& c : list)
      if (!c.passed) out += (out.empty() ? "" : "; ") + c.detail;
    return out;
  }
  Json json() const {
    Json out = Json::array();
    for (auto& c : list) out.push_back(Json{{"check", c.name}, {"passed", c.passed}, {"detail", c.detail}});
    return out;
  }
};

std::string short_id(const std::string& sha) { return sha.substr(0, 12); }

std::string device_names(const std::vector<std::string>& ids) {
  std::string out;
  for (std::size_t i = 0; i < ids.size() && i < 20; ++i) out += (i ? ", " : "") + ids[i];
  if (ids.size() > 20) out += fmt::format(" and {} more", ids.size() - 20);
  return out;
}

// The MCUboot checks of one image blob as the product's boards make them: structure and hash, a key the
// product trusts (by full key or key hash), the signature, and the slot it must fit.
void check_image(Call& call, const Product& product, const std::string& sha, Checks& checks) {
  auto path = blob_path(call.config, call.who.tenant_id, sha);
  mcuboot::ImageReport plain;
  // An encrypted release: its hash covers the plaintext, which the service reads with its delivery key when
  // the release was encrypted for it; else the signature is checked over the digest the image carries.
  const mcuboot::ContentKeyOpener* opener = call.config.delivery_key.get();
  try {
    plain = mcuboot::inspect_image(path, std::nullopt);
    if (plain.encryption_tlv && opener) {
      try {
        plain = mcuboot::inspect_image(path, std::nullopt, {}, opener);
      } catch (const Error&) {
        opener = nullptr;  // encrypted for another key
      }
    } else {
      opener = nullptr;
    }
  } catch (const Error& e) {
    checks.fail("mcuboot", fmt::format("image {} is not an MCUboot image: {}", short_id(sha), e.what()));
    return;
  }
  bool encrypted_unread = plain.encryption_tlv && !plain.hash_ok && plain.failure.empty();
  if (!plain.hash_ok && !encrypted_unread) {
    checks.fail("mcuboot", fmt::format("image {} is not a valid MCUboot image: {}", short_id(sha), plain.failure));
    return;
  }
  if (encrypted_unread)
    checks.pass("mcuboot", fmt::format("image {} is an encrypted MCUboot image (its hash covers the plaintext, "
                                       "which only the devices read)",
                                       short_id(sha)));
  else
    checks.pass("mcuboot", fmt::format("image {} is an MCUboot image ({} hash verified)", short_id(sha),
                                       plain.hash ? hash_name(*plain.hash) : std::string_view("image")));
  std::int64_t slot = product.slot_size > 0 ? product.slot_size : default_slot_size;
  auto image_bytes = static_cast<std::int64_t>(plain.image.end);
  auto trailer = static_cast<std::int64_t>(mcuboot::trailer_size(mcuboot::TrailerLayout{}));
  if (image_bytes + trailer > slot)
    checks.fail("slot_size", fmt::format("image {} needs {} bytes with its trailer ({} + {}); the slot of product {} "
                                         "holds {} bytes",
                                         short_id(sha), image_bytes + trailer, image_bytes, trailer, product.name, slot));
  else
    checks.pass("slot_size", fmt::format("image {} ({} bytes and a {}-byte trailer) fits the {}-byte slot",
                                         short_id(sha), image_bytes, trailer, slot));
  if (product.boot_keys.empty()) {
    checks.fail("boot_key", fmt::format("product {} has no boot keys to check image {} against: kiln product update "
                                        "{} --boot-key KEY.pem",
                                        product.name, short_id(sha), product.name));
    return;
  }
  if (!plain.embedded_key_hash) {
    checks.fail("boot_key", fmt::format("image {} names no signing key (no KEYHASH or PUBKEY TLV)", short_id(sha)));
    return;
  }
  auto hash_of = [](const std::string& hex) { return digest(HashAlg::sha256, mcuboot_public_key_bytes(from_hex(hex))); };
  const std::string* boot_key = nullptr;
  for (auto& key : product.boot_keys)
    if (hash_of(key) == *plain.embedded_key_hash) boot_key = &key;
  if (!boot_key) {
    checks.fail("boot_key", fmt::format("image {} was signed by the key with hash {}, which is not a boot key of "
                                        "product {}",
                                        short_id(sha), to_hex(*plain.embedded_key_hash), product.name));
    return;
  }
  bool full_key = false;
  for (const auto& e : plain.image.unprotected_area.entries) full_key = full_key || e.type == mcuboot::tlv::pubkey;
  // A board holds only the boot-key hash: with KEYHASH alone it needs the full key from elsewhere, the
  // manifest key when it is the same key.
  bool board_has_key = full_key || std::any_of(product.manifest_keys.begin(), product.manifest_keys.end(),
                                               [&](const std::string& m) { return hash_of(m) == *plain.embedded_key_hash; });
  if (!board_has_key) {
    checks.fail("boot_key", fmt::format("image {} carries only the hash of its signing key, and the boards hold no "
                                        "public key with that hash: sign with --public-key-format full",
                                        short_id(sha)));
    return;
  }
  auto report = mcuboot::inspect_image(path, from_hex(*boot_key), {}, opener);
  if (!report.ok()) {
    checks.fail("boot_key", fmt::format("image {}: {}", short_id(sha), report.failure));
    return;
  }
  checks.pass("boot_key", fmt::format("image {} is signed by boot key {} of product {}", short_id(sha),
                                      to_hex(*plain.embedded_key_hash).substr(0, 16), product.name));
}

// The envelope's signatures: at least the product's manifest_threshold distinct manifest keys (M of N), the
// rule its boards apply (suit::count_trusted_signatures).
void check_manifest_signature(Call& call, const Product& product, const std::string& manifest, Checks& checks) {
  if (product.manifest_keys.empty()) {
    checks.fail("manifest_key", fmt::format("product {} has no manifest keys to check manifest {} against: kiln "
                                            "product update {} --manifest-key KEY.pem",
                                            product.name, short_id(manifest), product.name));
    return;
  }
  Bytes bytes = read_file(blob_path(call.config, call.who.tenant_id, manifest));
  std::vector<suit::TrustedKey> keys;
  for (auto& key : product.manifest_keys)
    keys.push_back({"manifest key " + describe_public_key(from_hex(key)).fingerprint.substr(0, 16), from_hex(key)});
  const auto threshold = static_cast<std::size_t>(std::max<std::int64_t>(product.manifest_threshold, 1));
  try {
    suit::SignatureCount count = suit::count_trusted_signatures(bytes, keys, threshold);
    if (count.met()) {
      checks.pass("manifest_key",
                  product.manifest_keys.size() == 1
                      ? fmt::format("manifest {} is signed by the manifest key of product {}", short_id(manifest),
                                    product.name)
                      : fmt::format("manifest {} is signed by {} of the manifest keys of product {} (threshold {} of "
                                    "{})",
                                    short_id(manifest), count.valid, product.name, count.required, count.trusted));
      return;
    }
    checks.fail("manifest_key", fmt::format("manifest {} does not verify against the manifest keys of product {}: {}",
                                            short_id(manifest), product.name, count.describe()));
  } catch (const Error& e) {
    checks.fail("manifest_key", fmt::format("manifest {} does not verify against the manifest keys of product {}: {}",
                                            short_id(manifest), product.name, e.what()));
  }
}

// The sequence number must be above every sequence a device of the group runs or may be installing: the
// boards refuse anything else (anti-rollback).
void check_sequence(Call& call, const Group& group, const std::string& manifest, std::int64_t sequence,
                    Checks& checks) {
  auto deployments = call.store.list_deployments(call.who.tenant_id, group.id);
  std::map<std::string, std::pair<std::string, std::int64_t>> last_installed;  // device -> (time, sequence)
  std::vector<std::string> problems;
  for (auto& d : deployments) {
    bool other_release = d.manifest != std::optional<std::string>(manifest);
    std::vector<std::string> taking;
    call.store.for_each_deployment_device(d, [&](const DeploymentDevice& device) {
      if (!device.status || !d.sequence) return;
      auto status = parse_status(*device.status);
      if (status == DeviceStatus::installed) {
        auto& slot = last_installed[device.id];
        if (device.updated_at >= slot.first) slot = {device.updated_at, *d.sequence};
      } else if (!(status && (is_failure_status(*status) || left_deployment(*status))) &&
                 d.state != DeploymentState::aborted) {
        taking.push_back(device.id);
      }
    });
    if (other_release && d.sequence && *d.sequence >= sequence && d.state != DeploymentState::aborted &&
        !taking.empty())
      problems.push_back(fmt::format("deployment {} offers sequence {} and devices {} are installing it", d.id,
                                     *d.sequence, device_names(taking)));
    else if (other_release && d.sequence && *d.sequence >= sequence && is_open(d.state))
      problems.push_back(fmt::format("deployment {} still offers sequence {} to the group", d.id, *d.sequence));
  }
  std::vector<std::string> refusing;
  std::int64_t highest = -1;
  for (auto& device : call.store.group_firmware(group.id)) {
    std::optional<std::int64_t> running = device.sequence;
    if (!running)
      if (auto it = last_installed.find(device.id); it != last_installed.end()) running = it->second.second;
    if (!running) continue;
    highest = std::max(highest, *running);
    if (*running >= sequence && device.manifest_digest != std::optional<std::string>(manifest))
      refusing.push_back(device.id);
    else if (*running >= sequence && !device.manifest_digest)
      refusing.push_back(device.id);
  }
  if (!refusing.empty())
    problems.insert(problems.begin(),
                    fmt::format("devices {} run sequence {} or higher and would refuse it", device_names(refusing),
                                sequence));
  if (!problems.empty()) {
    checks.fail("sequence", fmt::format("manifest sequence number {} is not above what group {} runs or is offered: "
                                        "{}",
                                        sequence, group.product + "/" + group.name, fmt::join(problems, "; ")));
    return;
  }
  checks.pass("sequence", highest >= 0 ? fmt::format("sequence {} is above the group's highest, {}", sequence, highest)
                                       : fmt::format("sequence {}; no device of the group reported one", sequence));
}

// The group's devices by the wave they would be admitted in (a dry run).
Json planned_waves(Call& call, const Group& group, const std::string& id, const std::vector<int>& waves,
                   std::int64_t& devices) {
  Json out = Json::array();
  for (std::size_t i = 0; i < waves.size(); ++i)
    out.push_back(Json{{"wave", i + 1}, {"percent", waves[i]}, {"devices", Json::array()}});
  devices = 0;
  for (auto& device : call.store.group_firmware(group.id)) {
    ++devices;
    int wave = wave_of_bucket(waves, rollout_bucket(id, device.id));
    if (wave > 0) out[static_cast<std::size_t>(wave - 1)]["devices"].push_back(device.id);
  }
  return out;
}

}  // namespace

namespace {

// What a deployment delivers, checked before any device sees it: a release (images, manifest) or a trust update.
struct Payload {
  std::vector<std::string> images;
  std::optional<std::string> manifest;
  std::optional<std::int64_t> sequence, trust_version;
  Checks checks;
  // Called once the checks passed, in the deployment's unit of work (a new trust update is recorded then).
  std::function<void()> commit;
};

Payload release_payload(Call& call, const Json& body, const Group& group, const Product& product) {
  Payload p;
  auto images_it = body.find("images");
  if (images_it == body.end() || !images_it->is_array() || images_it->empty() || images_it->size() > 16)
    throw ApiError{400, "invalid_request",
                   "field 'images' must be an array of 1..16 image IDs (or field 'trust_update' a trust update)"};
  for (auto& image : *images_it) {
    if (!image.is_string()) throw ApiError{400, "invalid_request", "field 'images': image IDs are strings"};
    complete_blob(call, image.get<std::string>(), "image");
    p.images.push_back(image.get<std::string>());
  }
  // The manifest: named, or the one linked to the first image at upload (kiln image upload --manifest).
  p.manifest = optional_string(body, "manifest", 64);
  if (p.manifest) {
    checked_blob_id(*p.manifest, "field 'manifest'");
  } else {
    for (auto& image : p.images) {
      auto record = call.store.find_image(call.who.tenant_id, image);
      if (record && record->manifest) {
        p.manifest = record->manifest;
        break;
      }
    }
  }
  // What the boards of the product would refuse is refused here.
  if (p.manifest) {
    auto facts = read_manifest(call, *p.manifest);
    check_manifest_covers(call, *p.manifest, facts, *images_it);
    p.sequence = static_cast<std::int64_t>(facts.sequence);
    p.checks.pass("manifest", fmt::format("manifest {} (sequence {}) describes every image", short_id(*p.manifest),
                                          facts.sequence));
    check_manifest_signature(call, product, *p.manifest, p.checks);
  } else {
    p.checks.fail("manifest", "no SUIT manifest: the boards install nothing without one (upload the image with "
                              "'kiln image upload IMAGE --manifest ENVELOPE', or pass --manifest ID)");
  }
  for (auto& image : p.images) check_image(call, product, image, p.checks);
  if (p.manifest) check_sequence(call, group, *p.manifest, *p.sequence, p.checks);
  return p;
}

// A trust deployment: the update checked as kiln trust publish checks it (recorded when new, once the
// deployment is created), and above every trust version the group is offered by a deployment not aborted.
Payload trust_payload(Call& call, const Json& body, const Group& group, Product& product) {
  Payload p;
  if (body.contains("images") || body.contains("manifest"))
    throw ApiError{400, "invalid_request", "a deployment carries images or a trust update, not both"};
  auto bytes = from_base64(required_string(body, "trust_update", 65536));
  if (!bytes) throw ApiError{400, "invalid_request", "field 'trust_update' must be base64"};
  try {
    p.trust_version = deployable_trust_version(call, product, *bytes, false);
    p.checks.pass("trust_update",
                  fmt::format("trust version {} for product {}: signed by enough of the keys in force",
                              *p.trust_version, product.name));
  } catch (const ApiError& e) {
    if (e.status != 422) throw;
    p.checks.fail("trust_update", e.message);
    return p;
  }
  for (auto& d : call.store.list_deployments(call.who.tenant_id, group.id)) {
    if (!d.trust_version || *d.trust_version < *p.trust_version || d.state == DeploymentState::aborted) continue;
    p.checks.fail("trust_group", fmt::format("group {} already has trust deployment {} ({}) of trust version {}",
                                             group.product + "/" + group.name, d.id, state_name(d.state),
                                             *d.trust_version));
    return p;
  }
  p.checks.pass("trust_group", fmt::format("no deployment offers group {} trust version {} or higher",
                                           group.product + "/" + group.name, *p.trust_version));
  p.commit = [&call, &product, update = *bytes] { deployable_trust_version(call, product, update, true); };
  return p;
}

}  // namespace

Reply create_deployment(Call& call) {
  auto body = parse_object(call.request.body);
  auto group = resolve_group_id(call, required_string(body, "group", 260));
  auto options = parse_rollout_options(body);
  bool dry_run = false;
  if (auto it = body.find("dry_run"); it != body.end() && !it->is_null()) {
    if (!it->is_boolean()) throw ApiError{400, "invalid_request", "field 'dry_run' must be true or false"};
    dry_run = it->get<bool>();
  }

  // Checks before any device sees it.
  auto group_row = call.store.find_group(call.who.tenant_id, group);
  auto product = call.store.find_product(call.who.tenant_id, group_row->product_id);
  Payload payload = body.contains("trust_update") ? trust_payload(call, body, *group_row, *product)
                                                  : release_payload(call, body, *group_row, *product);
  const Checks& checks = payload.checks;

  std::string id = random_id("dep_");
  if (dry_run) {
    std::int64_t devices = 0;
    auto waves = planned_waves(call, *group_row, id, options.waves, devices);
    Json rollout = Json::object();
    rollout["waves"] = options.waves;
    rollout["step_after"] = options.step_after;
    rollout["halt_on_failure"] = options.halt_on_failure ? Json(*options.halt_on_failure) : Json("never");
    rollout["halt_min_executed"] = options.halt_min_executed;
    auto controls = policy_json(options.policy);
    for (auto& [key, value] : controls.items()) rollout[key] = value;
    return {200, Json{{"dry_run", true},
                      {"would_create", checks.passed()},
                      {"reason", checks.passed() ? Json(nullptr) : Json(checks.reasons())},
                      {"group", group_row->product + "/" + group_row->name},
                      {"manifest", payload.manifest ? Json(*payload.manifest) : Json(nullptr)},
                      {"sequence", payload.sequence ? Json(*payload.sequence) : Json(nullptr)},
                      {"trust_version", payload.trust_version ? Json(*payload.trust_version) : Json(nullptr)},
                      {"devices", devices},
                      {"rollout", rollout},
                      {"waves", waves},
                      {"checks", checks.json()}}};
  }
  if (!checks.passed())
    throw ApiError{422, body.contains("trust_update") ? "trust_update_refused" : "deployment_refused",
                   "refused: " + checks.reasons()};

  auto tx = call.store.begin();
  if (payload.commit) payload.commit();
  // The deployment devices ran before this one (the target of a revert after an abort).
  Deployment row;
  if (!payload.trust_version) row.previous = call.store.newest_deployment(call.who.tenant_id, group, true);
  std::string now = now_iso8601();
  row.id = id;
  row.group_id = group;
  row.images = payload.images;
  row.manifest = payload.manifest;
  row.sequence = payload.sequence;
  row.trust_version = payload.trust_version;
  row.state = DeploymentState::active;
  row.waves = options.waves;
  row.wave = 1;
  row.wave_started_at = unix_now();
  row.step_after = options.step_after;
  row.halt_on_failure = options.halt_on_failure;
  row.halt_min_executed = options.halt_min_executed;
  row.policy = options.policy;
  // A scheduled start: the first wave (its step_after and the rate) begins then.
  row.wave_started_at = std::max(row.wave_started_at, row.policy.start_at);
  if (row.policy.rate.base_per_minute > 0) row.rate_steps = {{row.wave_started_at, 0}};
  row.created_at = row.updated_at = now;
  call.store.insert_deployment(call.who.tenant_id, row, now);
  // Revoked devices of the group are not in it: they are recorded revoked at once (never pending).
  DeviceFilter revoked;
  revoked.tenant_id = call.who.tenant_id;
  revoked.group_id = row.group_id;
  revoked.state = "revoked";
  for (std::optional<std::string> after;;) {
    auto page = call.store.list_devices(revoked, after, 1000);
    for (auto& device : page)
      call.store.record_status(id, device.id, status_name(DeviceStatus::revoked), "device revoked", now, std::nullopt);
    if (page.size() < 1000) break;
    after = page.back().id;
  }
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
  return transition(call, DeploymentState::paused, {DeploymentState::active, DeploymentState::completed});
}
Reply resume_deployment(Call& call) {
  return transition(call, DeploymentState::active, {DeploymentState::paused, DeploymentState::halted});
}
Reply abort_deployment(Call& call) {
  auto reply = transition(
      call, DeploymentState::aborted,
      {DeploymentState::active, DeploymentState::paused, DeploymentState::halted, DeploymentState::completed});
  // Each device that took it: going back to exactly what it ran before, back already, or not revertible. A
  // trust update is never taken back (boards refuse older versions): its abort only stops handing it out.
  auto row = load_deployment(call.store, call.who.tenant_id, call.params[0]);
  if (row.trust_version) {
    reply.body["revert"] = Json{{"reverting", 0}, {"unrevertable", 0}, {"devices", Json::array()}};
    return reply;
  }
  std::map<std::string, std::optional<std::string>> digests;
  for (auto& f : call.store.group_firmware(row.group_id)) digests[f.id] = f.manifest_digest;
  std::vector<std::string> took;
  call.store.for_each_deployment_device(row, [&](const DeploymentDevice& d) {
    if (status_is(d.status, DeviceStatus::installed) || status_is(d.status, DeviceStatus::testing))
      took.push_back(d.id);
  });
  Json devices = Json::array();
  std::int64_t unrevertable = 0, reverting = 0;
  for (auto& device : took) {
    auto target = revert_target(call.store, call.who.tenant_id, row, device);
    Json entry = {{"device", device}, {"to", target.to ? Json(target.to->id) : Json(nullptr)}};
    auto digest = digests.count(device) ? digests[device] : std::nullopt;
    if (!runs_aborted(call.store, row, device, digest, target)) {
      entry["state"] = revert_state_name(RevertState::reverted);
    } else if (!target.to && target.reason.empty()) {
      entry["state"] = revert_state_name(RevertState::reverted);  // it ran this very manifest before
    } else if (!target.to || !target.to->manifest) {
      entry["state"] = revert_state_name(RevertState::unrevertable);
      entry["reason"] = target.to ? fmt::format("deployment {} has no manifest", target.to->id) : target.reason;
      ++unrevertable;
    } else {
      entry["state"] = revert_state_name(RevertState::reverting);
      ++reverting;
    }
    devices.push_back(std::move(entry));
  }
  reply.body["revert"] = Json{{"reverting", reverting}, {"unrevertable", unrevertable}, {"devices", devices}};
  return reply;
}

Reply list_deployment_devices(Call& call) {
  auto row = load_deployment(call.store, call.who.tenant_id, call.params[0]);
  evaluate(call.store, row, false);
  auto status = call.query_value("status");
  if (status) {
    const auto& known = device_status_filters();
    if (std::find(known.begin(), known.end(), *status) == known.end())
      throw ApiError{400, "invalid_request", fmt::format("status must be one of {}", fmt::join(known, ", "))};
  }
  Json items = Json::array();
  auto now = unix_now();
  for_each_admitted(call.store, row, [&](const AdmittedDevice& device) {
    // Not yet started (or waiting to retry) outside its maintenance windows: waiting_window, until the next.
    auto shown = status_name(device.status);
    auto detail = device.detail;
    bool retrying = device.status == DeviceStatus::retrying;
    if (auto held = held_by_window(row, device, now); held && !retrying) {
      shown = waiting_window_status;
      detail = fmt::format("outside its maintenance windows ({}): the next opens at {}",
                           window_zone(row.policy, device.time_zone), *held ? iso8601(**held) : std::string("-"));
    }
    if (status && (*status == failures_filter ? !is_failure_status(shown) : shown != *status)) return;
    items.push_back(Json{{"device", device.id},
                         {"wave", device.wave},
                         {"status", shown},
                         {"attempt", device.attempt},
                         {"retry_at", device.retry_at && retrying ? Json(iso8601(*device.retry_at)) : Json(nullptr)},
                         {"detail", detail},
                         {"version", device.version.empty() ? Json(nullptr) : Json(device.version)},
                         {"updated_at", device.updated_at.empty() ? Json(nullptr) : Json(device.updated_at)}});
  });
  return {200, Json{{"items", items}}};
}

Reply deployment_report(Call& call) {
  auto row = load_deployment(call.store, call.who.tenant_id, call.params[0]);
  evaluate(call.store, row, false);
  Json items = Json::array();
  call.store.for_each_deployment_device(row, [&](const DeploymentDevice& d) {
    int wave = wave_of_bucket(row.waves, rollout_bucket(row.id, d.id));
    bool admitted = wave > 0 && (wave <= row.wave || d.status);
    std::string state = d.status ? *d.status : admitted ? status_name(DeviceStatus::pending) : "not_admitted";
    auto status = parse_status(state);
    bool installed = status == DeviceStatus::installed, failed = status && is_failure_status(*status);
    bool final_state = installed || failed;
    auto text_or_null = [](const std::optional<std::string>& v) { return v && !v->empty() ? Json(*v) : Json(nullptr); };
    Json duration = nullptr;
    if (final_state && !d.started_at.empty()) {
      auto from = unix_seconds(d.started_at), to = unix_seconds(d.updated_at);
      if (from && to) duration = *to - *from;
    }
    items.push_back(
        Json{{"device", d.id},
             {"wave", wave > 0 ? Json(wave) : Json(nullptr)},
             {"state", state},
             {"version_before", text_or_null(d.version_before)},
             {"version_after", installed ? text_or_null(d.version) : text_or_null(d.version_before)},
             {"failure_reason", failed || status == DeviceStatus::retrying ? Json(d.detail) : Json(nullptr)},
             {"started_at", d.started_at.empty() ? Json(nullptr) : Json(d.started_at)},
             {"finished_at", final_state ? Json(d.updated_at) : Json(nullptr)},
             {"duration_seconds", duration},
             {"attempts", d.status ? Json(d.attempt) : Json(0)}});
  });
  return {200, Json{{"deployment", row.id}, {"state", state_name(row.state)}, {"items", items}}};
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
