// The views `kiln deployment` renders: the table of one deployment (summary, then a row per wave), the
// dry-run plan, the list, and the live view `watch` redraws.
#pragma once

#include <cstddef>
#include <string>

#include "cli/context.hpp"
#include "cli/output.hpp"

namespace kiln::cli {

std::string deployment_table_text(const Json& deployment, const RenderOptions& options);
// The table on a table format, the JSON otherwise.
void render_deployment(const Context& ctx, const Json& deployment);
// A dry run as a table: the summary, then a row per check (the plan of waves is in -o json).
std::string dry_run_text(const Json& plan, const RenderOptions& options);
// `deployment list` as table rows.
Json deployment_list_rows(const Json& deployments);

// What `deployment watch` shows at each change: one JSON object per line (-o json), the table redrawn in place
// on a terminal, or each table after the last.
class DeploymentWatchView {
 public:
  explicit DeploymentWatchView(const Context& ctx);
  void show(const Json& deployment);

 private:
  const Context& ctx_;
  bool redraw_;
  std::size_t drawn_lines_ = 0;
};

}  // namespace kiln::cli
