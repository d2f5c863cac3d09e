// Tests for cli/progress: the progress line (exact strings, computed independently), human byte sizes, and
// that nothing is drawn when stderr is not a terminal.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "cli/context.hpp"
#include "cli/progress.hpp"
#include "core/files.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln::cli;

TEST_CASE("progress: the line shows percent, a bar that fits, rate and ETA") {
  auto line = ProgressBar::format_line("signing", 50 * 1024 * 1024, 100 * 1024 * 1024, 2.0, 60);
  CHECK(line == "signing  50% [#############..............] 25.0 MiB/s ETA 2s");
  CHECK(line.size() == 60);
  CHECK(ProgressBar::format_line("upload", 1000, 4000, 0.5, 50) == "upload  25% [####...............] 2.0 KiB/s ETA 2s");
  auto unknown = ProgressBar::format_line("upload", 2048, 0, 1.0, 60);
  CHECK(unknown == "upload 2.0 KiB 2.0 KiB/s");
}

TEST_CASE("progress: a line of things counted says how many, of how many when known, and how fast") {
  CHECK(ProgressBar::format_line("imported", 1200, 0, 4.0, 60, "units") == "imported 1200 units 300 units/s");
  CHECK(ProgressBar::format_line("imported", 25, 100, 5.0, 60, "units") ==
        "imported  25% [###..........] 25/100 units 5 units/s ETA 15s");
  CHECK(ProgressBar::format_line("imported", 0, 0, 0.0, 60, "units") == "imported 0 units 0 units/s");
}

TEST_CASE("progress: past the total it stays at 100%, no time yet means no rate, and a narrow line drops the bar") {
  CHECK(ProgressBar::format_line("x", 5000, 4000, 1.0, 40) == "x 100% [#####################] 4.9 KiB/s");
  CHECK(ProgressBar::format_line("download", 1, 3, 0.0, 40) == "download  33% [######............] 0 B/s");
  CHECK(ProgressBar::format_line("a-long-label", 1, 3, 1.0, 30) == "a-long-label  33%  1 B/s ETA 2s");
  for (int width : {40, 60, 80, 200}) {
    CAPTURE(width);
    CHECK(ProgressBar::format_line("flash", 123456, 654321, 3.0, width).size() <= static_cast<std::size_t>(width));
  }
}

TEST_CASE("progress: human_bytes uses binary units with one decimal above bytes") {
  CHECK(human_bytes(0) == "0 B");
  CHECK(human_bytes(1023) == "1023 B");
  CHECK(human_bytes(1024) == "1.0 KiB");
  CHECK(human_bytes(1536) == "1.5 KiB");
  CHECK(human_bytes(1.5 * 1024 * 1024) == "1.5 MiB");
  CHECK(human_bytes(3.0 * 1024 * 1024 * 1024 * 1024) == "3.0 TiB");
  CHECK(human_bytes(2.0 * 1024 * 1024 * 1024 * 1024 * 1024) == "2048.0 TiB");  // TiB is the largest unit
}

TEST_CASE("progress: with stderr not a terminal nothing is drawn and the callbacks are harmless") {
  Context ctx;  // not finalized: no terminal
  REQUIRE_FALSE(ctx.stderr_is_terminal());
  // Whatever would be drawn goes to a file in place of stderr for the duration.
  kiln::test::TempDir dir;
  std::fflush(stderr);
  std::cerr.flush();
  int saved = ::dup(STDERR_FILENO);
  int file = ::open(dir.file("stderr").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  REQUIRE(file >= 0);
  ::dup2(file, STDERR_FILENO);
  ::close(file);
  ProgressBar bar(ctx, "label", 100);
  CHECK_FALSE(bar.enabled());
  bar.update(50);
  bar.finish();
  ProgressBar count(ctx, "imported", 0, "units");
  CHECK_FALSE(count.callback());  // no callback: the library skips its reports
  count.finish();
  auto callback = progress_callback(ctx, "download");
  REQUIRE(callback);
  callback(10, 100);
  callback(100, 100);
  callback(100, 100);
  std::fflush(stderr);
  std::cerr.flush();
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  CHECK(kiln::read_text_file(dir.file("stderr")).empty());
}
