// Deployments: a group, images and a rollout percentage; active -> paused -> active, or aborted for good.
#include <fmt/format.h>

#include "service/handlers.hpp"

namespace kiln::service {
namespace {

constexpr const char* deployment_columns =
    "SELECT d.id, p.name || '/' || g.name, d.images, d.rollout, d.state, d.created_at, d.updated_at, g.id "
    "FROM deployments d JOIN device_groups g ON g.id = d.group_id JOIN products p ON p.id = g.product_id ";

Json deployment_json(Call& call, Statement& q) {
  auto count = call.db.prepare("SELECT count(*) FROM devices WHERE group_id = ?");
  count.bind(1, q.text(7));
  count.step();
  auto statuses = call.db.prepare("SELECT status, count(*) FROM deployment_devices WHERE deployment_id = ? GROUP BY status");
  statuses.bind(1, q.text(0));
  Json status_counts = Json::object();
  while (statuses.step()) status_counts[statuses.text(0)] = statuses.integer(1);
  return {{"id", q.text(0)},        {"group", q.text(1)},         {"images", Json::parse(q.text(2))},
          {"rollout", q.integer(3)}, {"state", q.text(4)},         {"devices", count.integer(0)},
          {"device_status", status_counts}, {"created_at", q.text(5)}, {"updated_at", q.text(6)}};
}

Json fetch_deployment(Call& call, const std::string& id) {
  auto q = call.db.prepare(std::string(deployment_columns) + "WHERE d.id = ? AND d.tenant_id = ?");
  q.bind(1, id).bind(2, call.who.tenant_id);
  if (!q.step()) throw ApiError{404, "not_found", fmt::format("deployment {} not found", id)};
  return deployment_json(call, q);
}

Reply transition(Call& call, const char* to, std::initializer_list<const char*> from) {
  auto& id = call.params[0];
  Json current = fetch_deployment(call, id);
  auto state = current["state"].get<std::string>();
  if (state == to) return {200, current};
  bool allowed = false;
  for (auto* f : from) allowed = allowed || state == f;
  if (!allowed) throw ApiError{409, "conflict", fmt::format("deployment {} is {}: it cannot become {}", id, state, to)};
  call.db.prepare("UPDATE deployments SET state = ?, updated_at = ? WHERE id = ?").bind(1, to).bind(2, now_iso8601()).bind(3, id).run();
  return {200, fetch_deployment(call, id)};
}

}  // namespace

Reply create_deployment(Call& call) {
  auto body = parse_object(call.request.body);
  auto group = resolve_group_id(call, required_string(body, "group", 260));
  auto images_it = body.find("images");
  if (images_it == body.end() || !images_it->is_array() || images_it->empty() || images_it->size() > 16)
    throw ApiError{400, "invalid_request", "field 'images' must be an array of 1..16 image IDs"};
  for (auto& image : *images_it) {
    if (!image.is_string()) throw ApiError{400, "invalid_request", "image IDs are strings"};
    auto q = call.db.prepare("SELECT complete FROM images WHERE tenant_id = ? AND sha256 = ?");
    q.bind(1, call.who.tenant_id).bind(2, image.get<std::string>());
    if (!q.step()) throw ApiError{404, "not_found", fmt::format("image {} not found", image.get<std::string>())};
    if (q.integer(0) == 0) throw ApiError{409, "incomplete", fmt::format("image {} is still being uploaded", image.get<std::string>())};
  }
  std::int64_t rollout = 100;
  if (auto it = body.find("rollout"); it != body.end()) {
    if (!it->is_number_integer()) throw ApiError{400, "invalid_request", "field 'rollout' must be an integer percentage"};
    rollout = it->get<std::int64_t>();
    if (rollout < 1 || rollout > 100) throw ApiError{400, "invalid_request", "rollout must be 1..100"};
  }
  std::string id = random_id("dep_");
  std::string now = now_iso8601();
  call.db.prepare("INSERT INTO deployments (id, tenant_id, group_id, images, rollout, state, created_at, updated_at) "
                  "VALUES (?, ?, ?, ?, ?, 'active', ?, ?)")
      .bind(1, id)
      .bind(2, call.who.tenant_id)
      .bind(3, group)
      .bind(4, images_it->dump())
      .bind(5, rollout)
      .bind(6, now)
      .bind(7, now)
      .run();
  return {201, fetch_deployment(call, id)};
}

Reply list_deployments(Call& call) {
  auto group = call.query_value("group");
  std::string sql = std::string(deployment_columns) + "WHERE d.tenant_id = ?";
  if (group) sql += " AND d.group_id = ?";
  auto q = call.db.prepare(sql + " ORDER BY d.created_at, d.id");
  q.bind(1, call.who.tenant_id);
  if (group) q.bind(2, resolve_group_id(call, *group));
  Json items = Json::array();
  while (q.step()) items.push_back(deployment_json(call, q));
  return {200, Json{{"items", items}}};
}

Reply show_deployment(Call& call) { return {200, fetch_deployment(call, call.params[0])}; }
Reply pause_deployment(Call& call) { return transition(call, "paused", {"active"}); }
Reply resume_deployment(Call& call) { return transition(call, "active", {"paused"}); }
Reply abort_deployment(Call& call) { return transition(call, "aborted", {"active", "paused"}); }

}  // namespace kiln::service
