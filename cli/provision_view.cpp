#include "cli/provision_view.hpp"

#include <iostream>

#include <fmt/format.h>

#include "cli/factory_views.hpp"

namespace kiln::cli {

ProvisionView::ProvisionView(const Context& ctx) : ctx_(ctx), table_(std::cerr) {
  if (ctx.format() == OutputFormat::jsonl) records_ = ctx.records();
  live_ = !records_ && ctx.stderr_is_terminal() && !ctx.global.quiet;
}

EventSink ProvisionView::sink() {
  return [this](const ProvisionEvent& e) { on_event(e); };
}

void ProvisionView::on_event(const ProvisionEvent& e) {
  std::lock_guard lock(mutex_);
  if (records_) {
    records_->add(event_json(e));
    return;
  }
  if (!live_) {
    if (e.result == StepStatus::failed) ctx_.detail(fmt::format("{} {}: {}", e.board, e.step, e.error));  // detail() escapes
    return;
  }
  table_.set(e.board, event_table_line(e));  // escaped by the table: the text comes from boards
}

void ProvisionView::render_outcomes(const std::vector<ProvisionOutcome>& outcomes) {
  Json rows = Json::array();
  for (const auto& o : outcomes) rows.push_back(outcome_json(o));
  if (!records_) {
    ctx_.render(rows);
    return;
  }
  std::lock_guard lock(mutex_);
  for (auto& row : rows) {
    row["step"] = "done";
    records_->add(row);
  }
  records_->finish();
}

}  // namespace kiln::cli
