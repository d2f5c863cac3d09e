// The shared vectors are pinned: every file in ../shared/vectors has a SHA-256 in tests/data/vectors.sha256 that
// it matches, a damaged, pointer or missing file fails by name, and every vector is read by some test.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/bytes.hpp"
#include "core/files.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/vectors.hpp"

using namespace kiln;
namespace fs = std::filesystem;

TEST_CASE("vectors: every file in the shared vectors is pinned and matches its SHA-256, every pin has its file") {
  std::set<std::string> on_disk;
  for (auto& entry : fs::recursive_directory_iterator(test::vectors_dir()))
    if (entry.is_regular_file()) on_disk.insert(fs::relative(entry.path(), test::vectors_dir()).string());
  REQUIRE(on_disk.size() >= 70);
  for (const auto& name : on_disk) CHECK_MESSAGE(test::pinned_vectors().count(name) == 1, name, " is not pinned");
  for (const auto& [name, hash] : test::pinned_vectors()) {
    auto problem = test::vector_problem(test::vectors_dir(), name);
    CHECK_MESSAGE(!problem, "vector ", name, " is ", problem.value_or(""));
  }
}

TEST_CASE("vectors: a missing, damaged or Git LFS pointer vector is reported with its name") {
  test::TempDir dir;
  fs::create_directories(dir.path() / "mcuboot");
  const std::string name = "mcuboot/ed25519-basic.signed.bin";
  Bytes good = read_file(test::vector(name));
  CHECK(test::vector_problem(dir.path().string(), name).value_or("").starts_with("missing"));
  Bytes damaged = good;
  damaged[0] ^= 1;  // the magic
  write_file_atomic(dir.path() / name, damaged);
  CHECK(test::vector_problem(dir.path().string(), name).value_or("").starts_with("damaged: SHA-256"));
  write_file_atomic(dir.path() / name,
                    as_bytes("version https://git-lfs.github.com/spec/v1\noid sha256:0000\nsize 100659\n"));
  CHECK(test::vector_problem(dir.path().string(), name).value_or("").find("Git LFS pointer") != std::string::npos);
  write_file_atomic(dir.path() / name, good);
  CHECK(!test::vector_problem(dir.path().string(), name));
  CHECK(test::vector_problem(dir.path().string(), "mcuboot/new.bin").value_or("").find("not pinned") !=
        std::string::npos);
}

// Coverage: a vector counts as exercised when a test source names it, or (for imgtool outputs) when a CASES.txt
// line produces it: image_test reproduces every CASES.txt line through the checked reader.
TEST_CASE("vectors: every pinned vector is named by a test or produced by a CASES.txt line") {
  std::string sources;
  for (auto& entry : fs::recursive_directory_iterator(fs::path(KILN_SOURCE_DIR) / "tests"))
    if (entry.is_regular_file() && (entry.path().extension() == ".cpp" || entry.path().extension() == ".hpp") &&
        entry.path().filename() != "shared_vectors_test.cpp")
      sources += read_text_file(entry.path());
  std::set<std::string> case_outputs;
  for (auto set : {"mcuboot", "mcuboot-more"}) {
    std::istringstream lines(read_text_file(test::vector(std::string(set) + "/CASES.txt")));
    for (std::string line; std::getline(lines, line);) {
      if (line.empty() || line[0] == '#' || line.find('|') == std::string::npos) continue;
      std::istringstream words(line);
      std::string output;
      words >> output;
      // mcuboot/CASES.txt is reproduced line by line, with the keys and inputs it names; mcuboot-more's
      // outputs are checked by name in image_test.
      if (std::string(set) != "mcuboot") continue;
      case_outputs.insert(std::string(set) + "/" + output);
      for (std::string word; words >> word;) case_outputs.insert(std::string(set) + "/" + word);
    }
  }
  for (const auto& [name, hash] : test::pinned_vectors()) {
    auto base = fs::path(name).filename().string();
    bool named = sources.find('"' + base + '"') != std::string::npos ||
                 sources.find('"' + name + '"') != std::string::npos;
    CHECK_MESSAGE((named || case_outputs.count(name) == 1), "vector ", name, " is exercised by no test");
  }
}
