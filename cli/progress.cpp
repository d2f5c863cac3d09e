// ProgressBar: throttled redraws (10 per second) of one stderr line, erased when done.
#include "cli/progress.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <fmt/format.h>

#include "cli/context.hpp"
#include "cli/output.hpp"

namespace kiln::cli {

std::string human_bytes(double bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} {}", bytes, units[u]) : fmt::format("{:.1f} {}", bytes, units[u]);
}

ProgressBar::ProgressBar(const Context& ctx, std::string label, std::uint64_t total, std::string noun)
    : label_(terminal_safe(label)),
      total_(total),
      noun_(terminal_safe(noun)),
      enabled_(ctx.stderr_is_terminal() && !ctx.global.quiet),
      width_(80),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_ - std::chrono::seconds(1)) {
  struct winsize ws {};
  if (enabled_ && ::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20) width_ = ws.ws_col;
}

ProgressBar::~ProgressBar() {
  if (enabled_ && !finished_) std::fputs("\r\x1b[K", stderr);
}

void ProgressBar::update(std::uint64_t done) {
  done_ = done;
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  draw(false);
}

void ProgressBar::finish() {
  if (!enabled_ || finished_) return;
  finished_ = true;
  std::fputs("\r\x1b[K", stderr);
  std::fflush(stderr);
}

void ProgressBar::draw(bool /*final*/) {
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::string line = format_line(label_, done_, total_, elapsed, width_ - 1, noun_);
  std::fprintf(stderr, "\r%s\x1b[K", line.c_str());
  std::fflush(stderr);
}

std::string ProgressBar::format_line(const std::string& label, std::uint64_t done, std::uint64_t total,
                                     double seconds_elapsed, int width, const std::string& noun) {
  double rate = seconds_elapsed > 0 ? static_cast<double>(done) / seconds_elapsed : 0;
  std::string amount = noun.empty() ? human_bytes(static_cast<double>(done)) : fmt::format("{} {}", done, noun);
  std::string right = noun.empty() ? fmt::format(" {}/s", human_bytes(rate)) : fmt::format(" {:.0f} {}/s", rate, noun);
  if (total == 0) return fmt::format("{} {}{}", label, amount, right);
  if (!noun.empty()) right = fmt::format(" {}/{} {}", done, total, noun) + right;
  double fraction = std::min(1.0, static_cast<double>(done) / static_cast<double>(total));
  if (rate > 0 && done < total) right += fmt::format(" ETA {:.0f}s", static_cast<double>(total - done) / rate);
  std::string left = fmt::format("{} {:3.0f}% ", label, fraction * 100);
  int bar = width - static_cast<int>(left.size() + right.size()) - 2;
  if (bar < 5) return left + right;
  int filled = static_cast<int>(fraction * bar);
  return left + "[" + std::string(static_cast<std::size_t>(filled), '#') +
         std::string(static_cast<std::size_t>(bar - filled), '.') + "]" + right;
}

std::function<void(std::uint64_t, std::uint64_t)> progress_callback(const Context& ctx, std::string label) {
  auto bar = std::make_shared<std::unique_ptr<ProgressBar>>();
  return [&ctx, bar, label = std::move(label)](std::uint64_t done, std::uint64_t total) {
    if (!*bar) *bar = std::make_unique<ProgressBar>(ctx, label, total);
    (*bar)->update(done);
    if (done >= total) (*bar)->finish();
  };
}

std::function<void(std::uint64_t)> ProgressBar::callback() {
  if (!enabled_) return {};
  return [this](std::uint64_t done) { update(done); };
}

}  // namespace kiln::cli
