// A table of one line per key, redrawn in place on stderr as its rows change: the factory's live board
// table. Lines are escaped here (they carry text from boards). Thread-safe.
#pragma once

#include <cstddef>
#include <map>
#include <mutex>
#include <ostream>
#include <string>

namespace kiln::cli {

class LiveTable {
 public:
  explicit LiveTable(std::ostream& out);
  // Sets the row for `key` (rows sorted by key) and redraws the table: up over the lines drawn, then each row.
  void set(const std::string& key, const std::string& line);

 private:
  std::ostream& out_;
  std::mutex mutex_;
  std::map<std::string, std::string> rows_;
  std::size_t drawn_ = 0;
};

}  // namespace kiln::cli
