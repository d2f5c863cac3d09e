// The JSON views `kiln factory` renders: board outcomes and step events, the profile written by init,
// and the ledger's verification report and statistics.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "cli/output.hpp"
#include "provisioning/ledger.hpp"
#include "provisioning/profile.hpp"
#include "provisioning/workflow.hpp"

namespace kiln::cli {

Json outcome_json(const ProvisionOutcome& outcome);
Json event_json(const ProvisionEvent& event);
// One line of the live board table: UID, step, result, the start of the error.
std::string event_table_line(const ProvisionEvent& event);
Json profile_json(const std::string& path, const StationProfile& profile);
Json ledger_verify_json(const std::filesystem::path& ledger, const LedgerVerifyReport& report);
Json ledger_stats_json(const LedgerStats& stats, const std::optional<std::int64_t>& quota);

}  // namespace kiln::cli
