#include "tests/support/vectors.hpp"

#include <doctest/doctest.h>
#include <openssl/evp.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/files.hpp"
#include "tests/support/process.hpp"

namespace kiln::test {

namespace {

std::string sha256_hex(const Bytes& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), md, &length, EVP_sha256(), nullptr);
  static const char* digits = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    hex += digits[md[i] >> 4];
    hex += digits[md[i] & 15];
  }
  return hex;
}

}  // namespace

const std::map<std::string, std::string>& pinned_vectors() {
  static const std::map<std::string, std::string> pins = [] {
    std::map<std::string, std::string> out;
    std::ifstream in(std::string(KILN_SOURCE_DIR) + "/tests/data/vectors.sha256");
    for (std::string line; std::getline(in, line);) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream words(line);
      std::string hash, name;
      words >> hash >> name;
      if (hash.size() == 64 && !name.empty()) out[name] = hash;
    }
    return out;
  }();
  return pins;
}

std::optional<std::string> vector_problem(const std::string& root, const std::string& name) {
  auto pin = pinned_vectors().find(name);
  if (pin == pinned_vectors().end()) return "not pinned in tests/data/vectors.sha256";
  std::filesystem::path path = std::filesystem::path(root) / name;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return "missing (" + path.string() + ")";
  Bytes data = read_file(path.string());
  std::string text(data.begin(), data.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(data.size(), 64)));
  if (text.starts_with("version https://git-lfs")) return "a Git LFS pointer, not the file (run git lfs pull)";
  auto actual = sha256_hex(data);
  if (actual != pin->second) return "damaged: SHA-256 " + actual + ", pinned " + pin->second;
  return std::nullopt;
}

std::string vector(const std::string& name) {
  if (auto problem = vector_problem(vectors_dir(), name)) FAIL("vector " << name << " is " << *problem);
  return vectors_dir() + "/" + name;
}

Bytes vector_bytes(const std::string& name) {
  return read_file(vector(name));
}

std::vector<ImgtoolCase> imgtool_cases(const std::string& cases_vector) {
  std::vector<ImgtoolCase> cases;
  std::istringstream lines(read_text_file(vector(cases_vector)));
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    auto bar = line.find('|');
    INFO(cases_vector, ": ", line);
    REQUIRE(bar != std::string::npos);
    ImgtoolCase c;
    std::istringstream name(line.substr(0, bar));
    name >> c.output;
    std::istringstream words(line.substr(bar + 1));
    for (std::string w; words >> w;) c.args.push_back(w);
    cases.push_back(c);
  }
  return cases;
}

Bytes padded_more_app() {
  Bytes app = vector_bytes("mcuboot-more/app.bin");
  app.resize((app.size() + 15) / 16 * 16, 0);
  return app;
}

}  // namespace kiln::test
