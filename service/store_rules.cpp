// What the two Store backends share besides the seam: row mappings, JSON of array columns, tally bookkeeping.
#include "service/store_rules.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "service/rollout.hpp"
#include "service/rollout_policy.hpp"

namespace kiln::service {

std::optional<std::string> StoreRow::optional_text(int column) const {
  if (is_null(column)) return std::nullopt;
  return text(column);
}

std::optional<std::int64_t> StoreRow::optional_integer(int column) const {
  if (is_null(column)) return std::nullopt;
  return integer(column);
}

const char* const product_columns =
    "SELECT id, name, coalesce(description, ''), created_at, boot_keys, manifest_keys, slot_size, "
    "manifest_threshold FROM products ";

Product read_product(const StoreRow& row) {
  return Product{row.text(0),
                 row.text(1),
                 row.text(2),
                 row.text(3),
                 parse_string_array(row.text(4)),
                 parse_string_array(row.text(5)),
                 row.integer(6),
                 row.integer(7)};
}

const char* const group_columns =
    "SELECT g.id, g.product_id, p.name, g.name, coalesce(g.description, ''), g.created_at FROM device_groups g "
    "JOIN products p ON p.id = g.product_id ";

Group read_group(const StoreRow& row) {
  return {row.text(0), row.text(1), row.text(2), row.text(3), row.text(4), row.text(5)};
}

const char* const device_columns =
    "SELECT d.id, p.name, g.name, d.state, d.version, d.claimed, d.last_seen, d.imported_at, d.time_zone, "
    "d.revoked_at, d.revoked_reason, d.trust_version FROM devices d JOIN products p ON p.id = d.product_id LEFT JOIN device_groups g ON g.id = d.group_id ";

DeviceView read_device(const StoreRow& row) {
  std::optional<std::string> group;  // "Product/Group"
  if (!row.is_null(2)) group = row.text(1) + "/" + row.text(2);
  return DeviceView{row.text(0), row.text(1),          group,       row.text(3),         row.optional_text(4),
                    row.flag(5), row.optional_text(6), row.text(7), row.optional_text(8), row.optional_text(9),
                    row.optional_text(10), row.optional_integer(11)};
}

const char* const image_columns =
    "SELECT sha256, coalesce(name, ''), size, received, complete, created_at, manifest FROM images ";

ImageRecord read_image(const StoreRow& row) {
  return {row.text(0), row.text(1), row.integer(2), row.integer(3), row.flag(4), row.text(5), row.optional_text(6)};
}

const char* const owned_cas =
    "SELECT c.tenant_id, c.pem FROM factory_cas c JOIN factory_ca_owners o ON o.key_sha256 = c.key_sha256 AND "
    "o.tenant_id = c.tenant_id ";

LedgerHead read_ledger_head(const StoreRow& row) {
  return LedgerHead{row.text(0), row.integer(1), row.text(2), row.text(3)};
}

IdempotencyRecord read_idempotency(const StoreRow& row) {
  return IdempotencyRecord{row.text(0), row.text(1),          static_cast<int>(row.integer(2)),
                           row.text(3), row.optional_text(4), row.flag(5)};
}

FactoryCaRecord read_factory_ca(const StoreRow& row) {
  return {row.text(0), row.text(1),  row.text(2),          row.flag(3),         row.optional_text(4),
          row.flag(5), row.text(6), row.optional_text(7), row.optional_text(8)};
}

DeviceFirmware read_device_firmware(const StoreRow& row) {
  return DeviceFirmware{row.text(0), row.optional_integer(1), row.optional_text(2)};
}

DeploymentDevice read_deployment_device(const StoreRow& row) {
  return DeploymentDevice{row.text(0),
                          row.optional_text(1),
                          row.text(2),
                          row.text(3),
                          row.text(4),
                          row.optional_text(5),
                          row.optional_text(6),
                          row.text(7),
                          row.text(8),
                          row.integer(9),
                          row.optional_integer(10),
                          row.optional_text(11)};
}

Deployment read_deployment(const StoreRow& row) {
  Deployment d;
  d.id = row.text(0);
  d.group_id = row.text(1);
  d.group = row.text(2);
  d.images = parse_string_array(row.text(3));
  d.manifest = row.optional_text(4);
  d.sequence = row.optional_integer(5);
  d.waves = parse_waves(row.text(6));
  d.wave = static_cast<int>(row.integer(7));
  d.wave_started_at = row.integer(8);
  d.step_after = row.integer(9);
  if (!row.is_null(10)) d.halt_on_failure = row.real(10);
  d.halt_reason = row.optional_text(11);
  d.failure_baseline = row.integer(12);
  d.previous = row.optional_text(13);
  auto state = row.text(14);
  auto parsed = parse_deployment_state(state);
  if (!parsed) throw Error(ExitCode::failure, "deployment " + d.id + " has an unknown state in the store: " + state);
  d.state = *parsed;
  d.created_at = row.text(15);
  d.updated_at = row.text(16);
  if (row.columns() > 17) d.halt_min_executed = row.integer(17);
  if (row.columns() > 19) {
    d.policy = policy_from_text(row.text(18));
    read_progress(d, row.text(19));
  }
  if (row.columns() > 20) d.trust_version = row.optional_integer(20);
  return d;
}

std::string deployment_select(std::string_view first_columns, bool later_columns) {
  return std::string(first_columns) + (later_columns ? ", d.halt_min_executed, d.policy, d.progress, d.trust_version" : "") +
         " FROM deployments d JOIN device_groups g ON g.id = d.group_id JOIN products p ON p.id = g.product_id ";
}

const char* device_count_column(DeviceCountKey by) {
  return by == DeviceCountKey::version ? "d.version"
         : by == DeviceCountKey::state ? "d.state"
         : by == DeviceCountKey::group ? "d.group_id"
                                       : "d.product_id";
}

bool count_key_is_id(DeviceCountKey by) {
  return by == DeviceCountKey::group || by == DeviceCountKey::product;
}

std::string json_array(const std::vector<std::string>& values) {
  return nlohmann::json(values).dump();
}
std::string json_array(const std::vector<int>& values) {
  return nlohmann::json(values).dump();
}

std::vector<std::string> parse_string_array(const std::string& text) {
  std::vector<std::string> out;
  for (auto& v : nlohmann::json::parse(text)) out.push_back(v.get<std::string>());
  return out;
}

std::vector<int> parse_waves(const std::string& text) {
  std::vector<int> waves;
  for (auto& w : nlohmann::json::parse(text)) waves.push_back(w.get<int>());
  return waves;
}

RolloutTally empty_tally(const std::vector<int>& waves) {
  RolloutTally t;
  t.waves.resize(waves.size());
  return t;
}

void add_tally_row(RolloutTally& tally, const TallyRow& row) {
  if (row.wave == 0) {
    if (row.status.empty()) tally.devices += row.devices;
    return;
  }
  if (row.wave < 0 || static_cast<std::size_t>(row.wave) > tally.waves.size()) return;
  auto& w = tally.waves[static_cast<std::size_t>(row.wave - 1)];
  if (row.status.empty())
    w.devices += row.devices;
  else if (row.devices != 0)
    w.reported[row.status] += row.devices;
}

std::vector<TallyRow> tally_rows(const RolloutTally& tally) {
  std::vector<TallyRow> rows{{0, "", tally.devices}};
  for (std::size_t i = 0; i < tally.waves.size(); ++i) {
    auto wave = static_cast<std::int64_t>(i + 1);
    rows.push_back({wave, "", tally.waves[i].devices});
    for (const auto& reported : tally.waves[i].reported) rows.push_back({wave, reported.first, reported.second});
  }
  return rows;
}

void count_device(RolloutTally& tally, const Deployment& deployment, const std::string& device_id,
                  const std::optional<std::string>& status) {
  ++tally.devices;
  int wave = device_wave(deployment.id, deployment.waves, device_id);
  if (wave == 0) return;
  auto& w = tally.waves[static_cast<std::size_t>(wave - 1)];
  ++w.devices;
  if (status) ++w.reported[*status];
}

int device_wave(const std::string& deployment_id, const std::vector<int>& waves, const std::string& device_id) {
  return wave_of_bucket(waves, rollout_bucket(deployment_id, device_id));
}

std::vector<TallyRow> membership_rows(int wave, const std::optional<std::string>& reported, std::int64_t delta) {
  std::vector<TallyRow> rows{{0, "", delta}};
  if (wave == 0) return rows;
  rows.push_back({wave, "", delta});
  if (reported) rows.push_back({wave, *reported, delta});
  return rows;
}

std::vector<TallyRow> report_rows(int wave, const std::optional<std::string>& previous, const std::string& status) {
  std::vector<TallyRow> rows;
  if (wave <= 0) return rows;
  if (previous) rows.push_back({wave, *previous, -1});
  rows.push_back({wave, status, 1});
  return rows;
}

void check_schema_not_newer(const std::string& store, int current, int latest) {
  if (current <= latest) return;
  throw Error(ExitCode::conflict,
              fmt::format("the store {} has schema version {}, newer than this kiln-service knows ({}): a newer "
                          "release wrote it, and an older one must not change it",
                          store, current, latest),
              "run the kiln-service release that wrote this store, or a newer one");
}

}  // namespace kiln::service
