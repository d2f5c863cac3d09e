// A progress bar on stderr for long operations: drawn only on a terminal and never with --quiet.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace kiln::cli {

class Context;

class ProgressBar {
 public:
  // total = 0 means unknown (shows bytes and rate only).
  ProgressBar(const Context& ctx, std::string label, std::uint64_t total);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void update(std::uint64_t done);
  void finish();
  bool enabled() const { return enabled_; }

  // Rendering, separate from the terminal so it can be tested: "label  42% [#####.....] 1.2 MiB/s ETA 3s".
  static std::string format_line(const std::string& label, std::uint64_t done, std::uint64_t total,
                                 double seconds_elapsed, int width);

 private:
  void draw(bool final);
  std::string label_;
  std::uint64_t total_;
  std::uint64_t done_ = 0;
  bool enabled_;
  bool finished_ = false;
  int width_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

std::string human_bytes(double bytes);

// A count of things done with no known total ("imported 1200 units"), redrawn in place on stderr: a terminal
// only, never with --quiet.
class CountProgress {
 public:
  CountProgress(const Context& ctx, std::string verb, std::string noun);
  // The callback the library reports the count to.
  std::function<void(std::uint64_t count)> callback();
  // Ends the line, when one was drawn.
  void finish();

 private:
  bool enabled_;
  bool drawn_ = false;
  std::string verb_, noun_;
};

// A (done, total) callback for the libraries' progress reports, driving a ProgressBar that is made at the
// first report, once the total is known, and finished when done reaches it.
std::function<void(std::uint64_t done, std::uint64_t total)> progress_callback(const Context& ctx, std::string label);

}  // namespace kiln::cli
