// Where a factory run's step events and outcomes go: JSON lines on stdout with -o jsonl (each event as it
// happens, then one "done" record per board), a live board table on a terminal, or failures as details.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "cli/context.hpp"
#include "cli/live_table.hpp"
#include "cli/output.hpp"
#include "provisioning/workflow.hpp"

namespace kiln::cli {

class ProvisionView {
 public:
  explicit ProvisionView(const Context& ctx);
  // The sink the workflow reports step events to (called from several board threads).
  EventSink sink();
  // Renders the outcomes: the result table, or the closing records of the JSON-lines stream.
  void render_outcomes(const std::vector<ProvisionOutcome>& outcomes);

 private:
  void on_event(const ProvisionEvent& e);

  const Context& ctx_;
  std::unique_ptr<RecordWriter> records_;
  bool live_ = false;
  std::mutex mutex_;
  LiveTable table_;
};

}  // namespace kiln::cli
