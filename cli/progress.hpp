// The one progress line on stderr for long operations, of bytes (signing, uploads, downloads) or of things counted
// (devices imported): drawn only on a terminal and never with --quiet.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace kiln::cli {

class Context;

class ProgressBar {
 public:
  // total = 0 means unknown (shows the amount and rate only). `noun` counts things instead of bytes
  // ("imported 1200 units 300 units/s").
  ProgressBar(const Context& ctx, std::string label, std::uint64_t total, std::string noun = {});
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void update(std::uint64_t done);
  void finish();
  bool enabled() const { return enabled_; }
  // A count callback for a library's reports (done so far) drawing this line; empty when nothing is drawn, so
  // that the library can skip its reports.
  std::function<void(std::uint64_t done)> callback();

  // Rendering, separate from the terminal so it can be tested: "label  42% [#####.....] 1.2 MiB/s ETA 3s", or
  // with a noun "label  42% [#####.....] 42/100 units 7 units/s ETA 3s".
  static std::string format_line(const std::string& label, std::uint64_t done, std::uint64_t total,
                                 double seconds_elapsed, int width, const std::string& noun = {});

 private:
  void draw(bool final);
  std::string label_;
  std::uint64_t total_;
  std::string noun_;
  std::uint64_t done_ = 0;
  bool enabled_;
  bool finished_ = false;
  int width_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

std::string human_bytes(double bytes);

// A (done, total) callback for the libraries' progress reports, driving a ProgressBar that is made at the
// first report, once the total is known, and finished when done reaches it.
std::function<void(std::uint64_t done, std::uint64_t total)> progress_callback(const Context& ctx, std::string label);

}  // namespace kiln::cli
