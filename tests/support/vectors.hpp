// The shared test vectors (../shared/vectors) checked against the SHA-256s pinned in tests/data/vectors.sha256:
// a vector that is missing, damaged or replaced by a Git LFS pointer fails the test reading it, naming the file.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/bytes.hpp"

namespace kiln::test {

// "mcuboot/app.bin" -> SHA-256 hex, from tests/data/vectors.sha256.
const std::map<std::string, std::string>& pinned_vectors();

// Why `root/name` does not match its pin ("missing", "a Git LFS pointer", "SHA-256 ... expected ..."), or nullopt.
std::optional<std::string> vector_problem(const std::string& root, const std::string& name);

// The absolute path of a vector ("suit/example0.signed.suit") after checking it against its pin (fails the test if not).
std::string vector(const std::string& name);
Bytes vector_bytes(const std::string& name);

// One line of an imgtool CASES.txt ("output | imgtool sign arguments"): the output vector and the arguments,
// which are kiln's too.
struct ImgtoolCase {
  std::string output;
  std::vector<std::string> args;
};
// The cases of a pinned CASES.txt ("mcuboot/CASES.txt"); a malformed line fails the test.
std::vector<ImgtoolCase> imgtool_cases(const std::string& cases_vector);

// mcuboot-more/app.bin as an encrypted image's payload holds it: padded with zeros to 16 bytes, as imgtool
// pads before encrypting.
Bytes padded_more_app();

}  // namespace kiln::test
