#include "cli/live_table.hpp"

#include <fmt/format.h>

#include "cli/output.hpp"

namespace kiln::cli {

LiveTable::LiveTable(std::ostream& out) : out_(out) {}

void LiveTable::set(const std::string& key, const std::string& line) {
  std::lock_guard lock(mutex_);
  // Text from boards is escaped, or one board could redraw the operator's screen.
  rows_[key] = terminal_safe(line);
  if (drawn_ > 0) out_ << fmt::format("\x1b[{}A", drawn_);
  for (const auto& row : rows_) out_ << "\r\x1b[2K" << row.second << '\n';
  drawn_ = rows_.size();
  out_.flush();
}

}  // namespace kiln::cli
