// doctest's main() for every kiln test executable. After the run it checks that /dev/null is still
// the character device: a test (or the code under test) that renames a file onto it, as root, breaks
// every later `>/dev/null` on the machine, and must fail the suite instead of passing silently.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <sys/stat.h>

#include <cstdio>

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  int result = context.run();
  if (context.shouldExit()) return result;
  struct stat st {};
  if (::stat("/dev/null", &st) != 0 || !S_ISCHR(st.st_mode)) {
    std::fprintf(stderr,
                 "FAILED: /dev/null is no longer a character device after these tests: a test replaced it. "
                 "Repair it as root with: rm /dev/null && mknod -m 666 /dev/null c 1 3\n");
    return result == 0 ? 1 : result;
  }
  return result;
}
