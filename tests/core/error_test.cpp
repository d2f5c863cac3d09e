// Tests for core/error: exit-code names and descriptions agree with docs/exit-codes.md, Error carries
// code/hint/detail, and openssl_errors drains the OpenSSL error queue.
#include <doctest/doctest.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "core/error.hpp"

using namespace kiln;

namespace {

const ExitCode all_codes[] = {ExitCode::ok,       ExitCode::failure,        ExitCode::usage,    ExitCode::verification_failed,
                              ExitCode::board,    ExitCode::service,        ExitCode::authentication,
                              ExitCode::conflict, ExitCode::partial,        ExitCode::not_found,
                              ExitCode::interrupted};

// "| 2 | usage | ..." rows of the table in docs/exit-codes.md: code → name.
std::map<int, std::string> documented_codes() {
  std::ifstream in(std::string(KILN_SOURCE_DIR) + "/docs/exit-codes.md");
  REQUIRE(in);
  std::map<int, std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.starts_with("| ") || line.size() < 3 || line[2] < '0' || line[2] > '9') continue;
    std::istringstream row(line.substr(1));
    std::string code, name;
    std::getline(row, code, '|');
    std::getline(row, name, '|');
    auto trim = [](std::string s) {
      s.erase(0, s.find_first_not_of(' '));
      s.erase(s.find_last_not_of(' ') + 1);
      return s;
    };
    out[std::stoi(trim(code))] = trim(name);
  }
  return out;
}

}  // namespace

TEST_CASE("error: every exit code has the name and number docs/exit-codes.md gives it") {
  auto documented = documented_codes();
  CHECK(documented.size() == std::size(all_codes));
  for (auto code : all_codes) {
    const int number = static_cast<int>(code);
    CAPTURE(number);
    REQUIRE(documented.count(number) == 1);
    CHECK(documented[number] == exit_code_name(code));
    CHECK(std::string(exit_code_description(code)).size() > 10);
  }
  CHECK(std::string(exit_code_name(ExitCode::verification_failed)) == "verification-failed");
  CHECK(std::string(exit_code_name(ExitCode::not_found)) == "not-found");
  CHECK(static_cast<int>(ExitCode::interrupted) == 130);
  // A value outside the enumeration (a corrupt code) is named, not undefined.
  CHECK(std::string(exit_code_name(static_cast<ExitCode>(42))) == "unknown");
  CHECK(std::string(exit_code_description(static_cast<ExitCode>(42))).empty());
}

TEST_CASE("error: Error carries its code, message, hint and detail") {
  Error plain(ExitCode::not_found, "no such image 'x'");
  CHECK(plain.code() == ExitCode::not_found);
  CHECK(std::string(plain.what()) == "no such image 'x'");
  CHECK(plain.hint().empty());
  CHECK(plain.detail().empty());
  try {
    throw Error(ExitCode::authentication, "wrong PIN", "check the token's PIN").with_detail("CKR_PIN_INCORRECT");
  } catch (const std::runtime_error& e) {  // caught as its base: the message survives
    CHECK(std::string(e.what()) == "wrong PIN");
    auto* error = dynamic_cast<const Error*>(&e);
    REQUIRE(error);
    CHECK(error->code() == ExitCode::authentication);
    CHECK(error->hint() == "check the token's PIN");
    CHECK(error->detail() == "CKR_PIN_INCORRECT");
  }
}

TEST_CASE("error: openssl_errors drains the queue into one line") {
  ERR_clear_error();
  CHECK(openssl_errors().empty());
  // Two failures leave (at least) two entries: a PEM read of text that is no PEM, twice.
  for (int i = 0; i < 2; ++i) {
    BIO* bio = BIO_new_mem_buf("not a key", -1);
    REQUIRE(bio);
    CHECK(PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr) == nullptr);
    BIO_free(bio);
  }
  auto text = openssl_errors();
  CAPTURE(text);
  CHECK(text.find("error:") == 0);
  CHECK(text.find("; error:") != std::string::npos);
  CHECK(ERR_peek_error() == 0);
  CHECK(openssl_errors().empty());
}
