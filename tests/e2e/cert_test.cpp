// End-to-end tests of `kiln cert`: a station CA root whose key stays on a SoftHSM2 token, a certificate it
// issues, both checked by `openssl verify`; `cert show`; bad input.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

namespace fs = std::filesystem;
using kiln::test::ProcessResult;

namespace {

const std::string softhsm_module = "/usr/lib/softhsm/libsofthsm2.so";

struct Station {
  kiln::test::TempDir dir;
  std::string conf = dir.file("softhsm2.conf");
  Station() {
    fs::create_directory(dir.path() / "tokens");
    std::ofstream(conf) << "directories.tokendir = " << dir.file("tokens")
                        << "\nobjectstore.backend = file\nlog.level = ERROR\n";
    REQUIRE(run("/usr/bin/softhsm2-util", {"--init-token", "--free", "--label", "CA", "--pin", "1234", "--so-pin",
                                           "5678"})
                .exit_code == 0);
  }
  kiln::test::ProcessOptions options() const {
    kiln::test::ProcessOptions o;
    o.cwd = dir.path().string();
    o.env["SOFTHSM2_CONF"] = conf;
    o.env["KILN_PKCS11_MODULE"] = softhsm_module;
    o.env["KILN_PKCS11_PIN"] = "1234";
    return o;
  }
  ProcessResult run(const std::string& program, const std::vector<std::string>& args) const {
    return kiln::test::run_process(program, args, options());
  }
  ProcessResult kiln(const std::vector<std::string>& args) const { return kiln::test::kiln(args, options()); }
};

}  // namespace

TEST_CASE("cert create: a CA root on a token issues a certificate; openssl verifies both; cert show describes them") {
  Station s;
  const std::string ca_key = "pkcs11:token=CA;object=station-ca";
  auto r = s.kiln({"key", "generate", "--type", "ecdsa-p256", "--pkcs11", ca_key + ";id=%01"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  r = s.kiln({"cert", "create", "--key", ca_key, "--subject", "/CN=Station CA/O=Example", "--ca", "--days", "3650",
              "-o", "ca.pem"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  r = s.kiln({"key", "generate", "--type", "ed25519", "-o", "leaf.key"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  r = s.kiln({"cert", "create", "--key", "leaf.key", "--subject", "/CN=line-1", "--issuer-cert", "ca.pem",
              "--issuer-key", ca_key, "-o", "leaf.pem"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);

  auto v = s.run("/usr/bin/openssl", {"verify", "-CAfile", s.dir.file("ca.pem"), s.dir.file("ca.pem")});
  CHECK_MESSAGE(v.exit_code == 0, (v.out + v.err));
  v = s.run("/usr/bin/openssl", {"verify", "-CAfile", s.dir.file("ca.pem"), s.dir.file("leaf.pem")});
  CHECK_MESSAGE(v.exit_code == 0, (v.out + v.err));
  auto text = s.run("/usr/bin/openssl", {"x509", "-in", s.dir.file("ca.pem"), "-noout", "-text"});
  CHECK(text.out.find("CA:TRUE") != std::string::npos);
  CHECK(text.out.find("Certificate Sign") != std::string::npos);

  auto show = s.kiln({"-o", "json", "cert", "show", "ca.pem"});
  REQUIRE_MESSAGE(show.exit_code == 0, show.err);
  auto j = nlohmann::json::parse(show.out);
  CHECK(j["ca"] == true);
  CHECK(j["self_signed"] == true);
  CHECK(j["self_signature_valid"] == true);
  CHECK(j["subject"].get<std::string>().find("Station CA") != std::string::npos);
  CHECK(j["key_type"] == "ecdsa-p256");
  show = s.kiln({"-o", "json", "cert", "show", "leaf.pem"});
  REQUIRE(show.exit_code == 0);
  j = nlohmann::json::parse(show.out);
  CHECK(j["ca"] == false);
  CHECK(j["self_signed"] == false);
  CHECK(j["key_type"] == "ed25519");

  // A leaf is no issuer; a key that is not the issuer certificate's key is refused; bad subjects are usage errors.
  CHECK(s.kiln({"cert", "create", "--key", "leaf.key", "--subject", "/CN=x", "--issuer-cert", "leaf.pem",
                "--issuer-key", "leaf.key", "-o", "x.pem"})
            .exit_code == 3);
  CHECK(s.kiln({"cert", "create", "--key", "leaf.key", "--subject", "/CN=x", "--issuer-cert", "ca.pem",
                "--issuer-key", "leaf.key", "-o", "x.pem"})
            .exit_code == 3);
  CHECK(s.kiln({"cert", "create", "--key", "leaf.key", "--subject", "CN=x", "-o", "x.pem"}).exit_code == 2);
  CHECK(s.kiln({"cert", "create", "--key", "leaf.key", "--subject", "/XX=x", "-o", "x.pem"}).exit_code == 2);
  CHECK(s.kiln({"cert", "create", "--key", "leaf.key", "--subject", "/CN=x", "--days", "0", "-o", "x.pem"}).exit_code ==
        2);
  CHECK(!fs::exists(s.dir.path() / "x.pem"));
  // Existing output without --force.
  CHECK(s.kiln({"cert", "create", "--key", "leaf.key", "--subject", "/CN=x", "-o", "leaf.pem"}).exit_code == 7);
}
