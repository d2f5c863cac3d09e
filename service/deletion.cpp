// Deleting what a tenant no longer needs: finished deployments here; images (images.cpp), products and
// groups (catalog.cpp) check with these helpers that nothing unfinished still needs them.
#include <fmt/format.h>

#include <algorithm>

#include "service/handlers.hpp"

namespace kiln::service {

std::vector<std::string> unfinished_deployments_using(Call& call, const std::string& sha) {
  std::vector<std::string> out;
  for (auto& row : call.store.list_deployments(call.who.tenant_id, std::nullopt)) {
    if (!is_open(row.state)) continue;
    row.tenant_id = call.who.tenant_id;
    // Its state as its time and reports say now (an active deployment may have completed since it was stored).
    evaluate_deployment(call.store, row);
    if (!is_open(row.state)) continue;
    bool uses = std::find(row.images.begin(), row.images.end(), sha) != row.images.end() || row.manifest == sha;
    if (uses) out.push_back(fmt::format("{} ({})", row.id, state_name(row.state)));
  }
  return out;
}

Reply delete_deployment(Call& call) {
  auto tx = call.store.begin();
  auto row = load_deployment(call.store, call.who.tenant_id, call.params[0]);
  evaluate_deployment(call.store, row);
  if (is_open(row.state))
    throw ApiError{409, "conflict",
                   fmt::format("deployment {} is {}: only a completed, aborted or superseded deployment can be "
                               "deleted (abort it first)",
                               row.id, state_name(row.state))};
  call.store.delete_deployment(row.id);
  tx->commit();
  return {200, Json{{"deleted", row.id}}};
}

}  // namespace kiln::service
