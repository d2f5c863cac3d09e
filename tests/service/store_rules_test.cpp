// The rules both store backends share (service/store_rules.hpp): row mappings, JSON of array columns, tallies.
#include <doctest/doctest.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "service/rollout.hpp"
#include "service/rollout_policy.hpp"
#include "service/store_rules.hpp"

using namespace kiln::service;

namespace {

// A row as a driver gives it: nullopt is SQL NULL, numbers are their text (as libpq sends them).
class FakeRow final : public StoreRow {
 public:
  explicit FakeRow(std::vector<std::optional<std::string>> cells) : cells_(std::move(cells)) {}
  int columns() const override { return static_cast<int>(cells_.size()); }
  bool is_null(int column) const override { return !cells_.at(static_cast<std::size_t>(column)); }
  std::string text(int column) const override { return cells_.at(static_cast<std::size_t>(column)).value_or(""); }
  std::int64_t integer(int column) const override { return is_null(column) ? 0 : std::stoll(text(column)); }
  double real(int column) const override { return is_null(column) ? 0 : std::stod(text(column)); }

 private:
  std::vector<std::optional<std::string>> cells_;
};

// The tally of `devices` devices of a deployment with these waves, each reporting `status` (or nothing).
RolloutTally recounted(const Deployment& deployment, const std::map<std::string, std::optional<std::string>>& devices) {
  auto tally = empty_tally(deployment.waves);
  for (const auto& device : devices) count_device(tally, deployment, device.first, device.second);
  return tally;
}

bool same(const RolloutTally& a, const RolloutTally& b) {
  if (a.devices != b.devices || a.waves.size() != b.waves.size()) return false;
  for (std::size_t i = 0; i < a.waves.size(); ++i)
    if (a.waves[i].devices != b.waves[i].devices || a.waves[i].reported != b.waves[i].reported) return false;
  return true;
}

Deployment deployment(std::vector<int> waves) {
  Deployment d;
  d.id = "dep_rules";
  d.group_id = "grp_1";
  d.waves = std::move(waves);
  return d;
}

}  // namespace

TEST_CASE("store rules: a row reads NULL as empty text, zero and nullopt; flags are non-zero integers") {
  FakeRow row({std::nullopt, std::string("7"), std::string("0"), std::string("text")});
  CHECK(row.text(0).empty());
  CHECK(row.integer(0) == 0);
  CHECK_FALSE(row.optional_text(0).has_value());
  CHECK_FALSE(row.optional_integer(0).has_value());
  CHECK(row.optional_integer(1) == std::optional<std::int64_t>(7));
  CHECK(row.flag(1));
  CHECK_FALSE(row.flag(2));
  CHECK(row.optional_text(3) == std::optional<std::string>("text"));
}

TEST_CASE("store rules: products, groups, images and ledger heads map column by column") {
  auto product = read_product(
      FakeRow({std::string("prd_1"), std::string("Thermo"), std::string(""), std::string("2026-01-01T00:00:00Z"),
               std::string(R"(["aa","bb"])"), std::string("[]"), std::string("4096"), std::string("2")}));
  CHECK(product.id == "prd_1");
  CHECK(product.name == "Thermo");
  CHECK(product.created_at == "2026-01-01T00:00:00Z");
  CHECK(product.boot_keys == std::vector<std::string>{"aa", "bb"});
  CHECK(product.manifest_keys.empty());
  CHECK(product.slot_size == 4096);
  CHECK(product.manifest_threshold == 2);

  auto group = read_group(FakeRow({std::string("grp_1"), std::string("prd_1"), std::string("Thermo"),
                                   std::string("lab"), std::string("desc"), std::string("t")}));
  CHECK(group.id == "grp_1");
  CHECK(group.product_id == "prd_1");
  CHECK(group.product == "Thermo");
  CHECK(group.name == "lab");
  CHECK(group.description == "desc");
  CHECK(group.created_at == "t");

  auto image = read_image(FakeRow({std::string("ab12"), std::string(""), std::string("100"), std::string("40"),
                                   std::string("0"), std::string("t"), std::nullopt}));
  CHECK(image.sha256 == "ab12");
  CHECK(image.size == 100);
  CHECK(image.received == 40);
  CHECK_FALSE(image.complete);
  CHECK_FALSE(image.manifest.has_value());

  auto head = read_ledger_head(FakeRow({std::string("led_1"), std::string("12"), std::string("ff"), std::string("t")}));
  CHECK(head.ledger_id == "led_1");
  CHECK(head.rows == 12);
  CHECK(head.hash == "ff");
  CHECK(head.imported_at == "t");
}

TEST_CASE("store rules: a device's group reads Product/Group, and none when it has no group") {
  auto in_group = read_device(
      FakeRow({std::string("dev-1"), std::string("Thermo"), std::string("lab"), std::string("ready"),
               std::string("1.2.0"), std::string("1"), std::nullopt, std::string("t0"), std::string("Europe/Berlin"),
               std::string("t9"), std::string("stolen"), std::string("2")}));
  CHECK(in_group.id == "dev-1");
  CHECK(in_group.product == "Thermo");
  CHECK(in_group.group == std::optional<std::string>("Thermo/lab"));
  CHECK(in_group.state == "ready");
  CHECK(in_group.version == std::optional<std::string>("1.2.0"));
  CHECK(in_group.claimed);
  CHECK_FALSE(in_group.last_seen.has_value());
  CHECK(in_group.imported_at == "t0");
  CHECK(in_group.time_zone == std::optional<std::string>("Europe/Berlin"));
  CHECK(in_group.revoked_at == std::optional<std::string>("t9"));
  CHECK(in_group.revoked_reason == std::optional<std::string>("stolen"));
  CHECK(in_group.trust_version == std::optional<std::int64_t>(2));

  auto alone =
      read_device(FakeRow({std::string("dev-2"), std::string("Thermo"), std::nullopt, std::string("new"), std::nullopt,
                           std::string("0"), std::string("t1"), std::string("t0"), std::nullopt, std::nullopt,
                           std::nullopt, std::nullopt}));
  CHECK_FALSE(alone.group.has_value());
  CHECK_FALSE(alone.trust_version.has_value());
  CHECK_FALSE(alone.claimed);
  CHECK(alone.last_seen == std::optional<std::string>("t1"));
  CHECK_FALSE(alone.revoked_at.has_value());
}

TEST_CASE("store rules: idempotency records, factory CAs, firmware and deployment devices") {
  auto record = read_idempotency(FakeRow({std::string("POST"), std::string("/v1/products"), std::string("201"),
                                          std::string("{}"), std::nullopt, std::string("1")}));
  CHECK(record.method == "POST");
  CHECK(record.status == 201);
  CHECK_FALSE(record.request_sha256.has_value());
  CHECK(record.secret);

  auto ca = read_factory_ca(FakeRow({std::string("ca_1"), std::string("CN=x"), std::string("pem"), std::string("0"),
                                     std::string("k"), std::string("1"), std::string("t"), std::string("t2"),
                                     std::nullopt}));
  CHECK(ca.id == "ca_1");
  CHECK_FALSE(ca.stations);
  CHECK(ca.key_sha256 == std::optional<std::string>("k"));
  CHECK(ca.usable);
  CHECK(ca.created_at == "t");
  CHECK(ca.revoked_at == std::optional<std::string>("t2"));
  CHECK_FALSE(ca.revoked_reason.has_value());

  auto reported = read_device_firmware(FakeRow({std::string("dev-1"), std::string("5"), std::string("d1")}));
  CHECK(reported.sequence == std::optional<std::int64_t>(5));
  auto silent = read_device_firmware(FakeRow({std::string("dev-2"), std::nullopt, std::nullopt}));
  CHECK_FALSE(silent.sequence.has_value());
  CHECK_FALSE(silent.manifest_digest.has_value());

  auto device = read_deployment_device(
      FakeRow({std::string("dev-1"), std::string("installing"), std::string(""), std::string("t1"), std::string("1.0"),
               std::string("m0"), std::nullopt, std::string("t0"), std::string("t2"), std::string("2"),
               std::string("1700000000"), std::nullopt}));
  CHECK(device.id == "dev-1");
  CHECK(device.status == std::optional<std::string>("installing"));
  CHECK(device.previous_manifest == std::optional<std::string>("m0"));
  CHECK_FALSE(device.version_before.has_value());
  CHECK(device.started_at == "t0");
  CHECK(device.last_seen == "t2");
  CHECK(device.attempt == 2);
  CHECK(device.retry_at == std::optional<std::int64_t>(1700000000));
  CHECK_FALSE(device.time_zone.has_value());
}

TEST_CASE("store rules: a deployment row of an old store stops before the later columns; a new one has them") {
  std::vector<std::optional<std::string>> v1 = {
      std::string("dep_1"), std::string("grp_1"), std::string("Thermo/lab"), std::string(R"(["ab"])"),
      std::nullopt,         std::string("9"),     std::string("[10,100]"),   std::string("2"),
      std::string("1000"),  std::string("60"),    std::string("2.5"),        std::nullopt,
      std::string("1"),     std::nullopt,         std::string("active"),     std::string("c"),
      std::string("u")};
  auto old = read_deployment(FakeRow(v1));
  CHECK(old.id == "dep_1");
  CHECK(old.group == "Thermo/lab");
  CHECK(old.images == std::vector<std::string>{"ab"});
  CHECK_FALSE(old.manifest.has_value());
  CHECK(old.sequence == std::optional<std::int64_t>(9));
  CHECK(old.waves == std::vector<int>{10, 100});
  CHECK(old.wave == 2);
  CHECK(old.wave_started_at == 1000);
  CHECK(old.step_after == 60);
  CHECK(old.halt_on_failure == std::optional<double>(2.5));
  CHECK(old.failure_baseline == 1);
  CHECK(state_name(old.state) == "active");
  CHECK(old.created_at == "c");
  CHECK(old.updated_at == "u");
  CHECK(old.halt_min_executed == 0);
  CHECK(old.policy == RolloutPolicy{});

  Rollout progress;
  progress.awaiting_approval = true;
  progress.pause_reason = "waiting";
  RolloutPolicy policy;
  policy.wave.success_percent = 90;
  auto v7 = v1;
  v7.push_back(std::string("3"));
  v7.push_back(policy_text(policy));
  v7.push_back(progress_text(progress));
  auto current = read_deployment(FakeRow(v7));
  CHECK(current.halt_min_executed == 3);
  CHECK(current.policy == policy);
  CHECK(current.awaiting_approval);
  CHECK(current.pause_reason == std::optional<std::string>("waiting"));
}

TEST_CASE("store rules: array columns are JSON text both ways; devices count by their column") {
  CHECK(json_array(std::vector<std::string>{"a", "b"}) == R"(["a","b"])");
  CHECK(json_array(std::vector<int>{1, 10, 100}) == "[1,10,100]");
  CHECK(parse_string_array(json_array(std::vector<std::string>{"x"})) == std::vector<std::string>{"x"});
  CHECK(parse_waves(json_array(std::vector<int>{5, 100})) == std::vector<int>{5, 100});
  CHECK(std::string(device_count_column(DeviceCountKey::version)) == "d.version");
  CHECK(std::string(device_count_column(DeviceCountKey::state)) == "d.state");
  CHECK(std::string(device_count_column(DeviceCountKey::group)) == "d.group_id");
  CHECK(std::string(device_count_column(DeviceCountKey::product)) == "d.product_id");
  CHECK(count_key_is_id(DeviceCountKey::group));
  CHECK(count_key_is_id(DeviceCountKey::product));
  CHECK_FALSE(count_key_is_id(DeviceCountKey::version));
  CHECK_FALSE(count_key_is_id(DeviceCountKey::state));
}

TEST_CASE("store rules: a recount puts each device in its bucket's wave; its stored rows read back the same") {
  auto d = deployment({20, 50, 100});
  std::map<std::string, std::optional<std::string>> devices;
  for (int i = 0; i < 40; ++i)
    devices["dev-" + std::to_string(i)] = i % 3 == 0   ? std::optional<std::string>("installed")
                                          : i % 3 == 1 ? std::optional<std::string>("failed")
                                                       : std::nullopt;
  auto tally = recounted(d, devices);
  CHECK(tally.devices == 40);
  REQUIRE(tally.waves.size() == 3);
  std::int64_t in_waves = 0, reported = 0;
  for (std::size_t w = 0; w < tally.waves.size(); ++w) {
    std::int64_t expected = 0;
    for (const auto& device : devices)
      if (device_wave(d.id, d.waves, device.first) == static_cast<int>(w + 1)) ++expected;
    CHECK(tally.waves[w].devices == expected);
    in_waves += tally.waves[w].devices;
    for (const auto& status : tally.waves[w].reported) reported += status.second;
  }
  CHECK(in_waves == 40);  // the last wave is 100%: every device is in one
  CHECK(reported == 27);  // 14 installed + 13 failed

  auto rows = tally_rows(tally);
  CHECK(rows.front() == TallyRow{0, "", 40});
  auto read_back = empty_tally(d.waves);
  for (const auto& row : rows) add_tally_row(read_back, row);
  CHECK(same(read_back, tally));
}

TEST_CASE("store rules: stored rows of waves the deployment lacks, and statuses of no devices, are passed over") {
  auto tally = empty_tally({50, 100});
  add_tally_row(tally, {3, "", 5});
  add_tally_row(tally, {-1, "", 5});
  add_tally_row(tally, {0, "installed", 5});  // wave 0 holds only the group's count
  add_tally_row(tally, {1, "failed", 0});
  CHECK(tally.devices == 0);
  CHECK(tally.waves[0].devices == 0);
  CHECK(tally.waves[0].reported.empty());
  add_tally_row(tally, {0, "", 4});
  add_tally_row(tally, {2, "", 3});
  add_tally_row(tally, {2, "installed", 2});
  add_tally_row(tally, {2, "installed", -1});
  CHECK(tally.devices == 4);
  CHECK(tally.waves[1].devices == 3);
  CHECK(tally.waves[1].reported.at("installed") == 1);
}

TEST_CASE("store rules: joining, leaving and reporting change the tally as a recount would") {
  auto d = deployment({30, 100});
  std::map<std::string, std::optional<std::string>> devices = {
      {"dev-a", std::string("installed")}, {"dev-b", std::nullopt}, {"dev-c", std::string("failed")}};
  // The table deployment_tallies of the deployment: (wave, status) -> devices, read as the stores read it.
  std::map<std::pair<std::int64_t, std::string>, std::int64_t> table;
  auto apply = [&table](const std::vector<TallyRow>& rows) {
    for (const auto& row : rows) table[{row.wave, row.status}] += row.devices;
  };
  auto kept = [&table, &d] {
    auto tally = empty_tally(d.waves);
    for (const auto& entry : table) add_tally_row(tally, {entry.first.first, entry.first.second, entry.second});
    return tally;
  };
  for (const auto& device : devices) apply(membership_rows(device_wave(d.id, d.waves, device.first), device.second, 1));
  CHECK(same(kept(), recounted(d, devices)));

  // dev-b reports, dev-a reports again, dev-c leaves the group.
  apply(report_rows(device_wave(d.id, d.waves, "dev-b"), std::nullopt, "downloading"));
  apply(report_rows(device_wave(d.id, d.waves, "dev-a"), std::string("installed"), "rebooting"));
  apply(membership_rows(device_wave(d.id, d.waves, "dev-c"), std::string("failed"), -1));
  devices["dev-b"] = "downloading";
  devices["dev-a"] = "rebooting";
  devices.erase("dev-c");
  CHECK(same(kept(), recounted(d, devices)));
}

TEST_CASE("store rules: a device in no wave changes only the group's count; its reports change nothing") {
  auto d = deployment({10});
  std::string outside;
  for (int i = 0; outside.empty(); ++i)
    if (device_wave(d.id, d.waves, "dev-" + std::to_string(i)) == 0) outside = "dev-" + std::to_string(i);
  CHECK(membership_rows(0, std::string("installed"), 1) == std::vector<TallyRow>{{0, "", 1}});
  CHECK(report_rows(0, std::nullopt, "installed").empty());
  CHECK(membership_rows(2, std::nullopt, -1) == std::vector<TallyRow>{{0, "", -1}, {2, "", -1}});
  CHECK(membership_rows(2, std::string("failed"), 1) ==
        std::vector<TallyRow>{{0, "", 1}, {2, "", 1}, {2, "failed", 1}});
  CHECK(report_rows(1, std::string("failed"), "installed") ==
        std::vector<TallyRow>{{1, "failed", -1}, {1, "installed", 1}});
  auto tally = recounted(d, {{outside, std::string("installed")}});
  CHECK(tally.devices == 1);
  CHECK(tally.waves[0].devices == 0);
  CHECK(tally.waves[0].reported.empty());
}
