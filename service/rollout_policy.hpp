// A deployment's rollout controls as JSON: the request fields that set them (checked, 400 naming the field),
// the one policy column both stores keep them in, and the progress column of what changes as it rolls out.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "service/rollout.hpp"

namespace kiln::service {

// The controls as the API shows and takes them (docs/openapi.yaml DeploymentControls):
//   wave_success   {"percent": 90, "then": "next"|"pause"}  or null
//   wave_error     {"count": 3} or {"percent": 10}           or null
//   abort_criteria [{"kind": "refused", "percent": 10, "min_executed": 5}, ...]
//   rate           {"base_per_minute": 10, "factor": 2, "increase_on": "notified"|"succeeded", "every": 50,
//                   "max_per_minute": 200|null} or null
//   schedule       {"start_at": "2026-12-24T02:00:00Z"|null, "windows": ["Mon-Fri 01:00-04:00"], "time_zone": "UTC"}
//                  or null
//   retry          {"retries": 3, "backoff_seconds": 30, "backoff_max_seconds": 600} or null
//   timeouts       {"downloading": 600, "installing": 900, "testing": 300} (seconds, each optional) or null
nlohmann::ordered_json policy_json(const RolloutPolicy& policy);

// The controls of a create request (absent fields: none). Throws ApiError 400 naming the field.
RolloutPolicy parse_policy(const nlohmann::ordered_json& body);

// Stored forms ("" or "{}" read back as no controls / no progress).
std::string policy_text(const RolloutPolicy& policy);
RolloutPolicy policy_from_text(const std::string& text);
std::string progress_text(const Rollout& rollout);
void read_progress(Rollout& rollout, const std::string& text);

}  // namespace kiln::service
