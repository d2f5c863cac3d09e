// The views `kiln deployment` renders: the table of one deployment (summary, then a row per wave), the
// dry-run plan, the list, and the live view `watch` redraws.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

#include "cli/context.hpp"
#include "cli/output.hpp"

namespace kiln::cli {

std::string deployment_table_text(const Json& deployment, const RenderOptions& options);
// The table on a table format, the JSON otherwise.
void render_deployment(const Context& ctx, const Json& deployment);
// A dry run as a table: the summary, then a row per check (the plan of waves is in -o json).
std::string dry_run_text(const Json& plan, const RenderOptions& options);
// The plan of `deployment create --dry-run`: dry_run_text on a table format, the JSON otherwise.
void render_deployment_plan(const Context& ctx, const Json& plan);
// `deployment list` as table rows.
Json deployment_list_rows(const Json& deployments);
// The list: deployment_list_rows on a table format, the deployments as the service gave them otherwise.
void render_deployment_list(const Context& ctx, const Json& deployments);

// What `deployment watch` shows at each change: one JSON object per line (-o json: each view; -o jsonl: each
// event, flushed as it is seen), the table redrawn in place on a terminal, or each table after the last.
class DeploymentWatchView {
 public:
  explicit DeploymentWatchView(const Context& ctx);
  // True for -o jsonl: the watch reports events (transport::watch_deployment_events), not whole views.
  bool events() const;
  void show(const Json& deployment_or_event);
  // show(), as the callback a watch reports to.
  std::function<void(const Json&)> sink();

 private:
  const Context& ctx_;
  bool redraw_;
  std::size_t drawn_lines_ = 0;
};

}  // namespace kiln::cli
