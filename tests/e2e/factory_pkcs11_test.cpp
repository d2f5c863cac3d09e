// End to end: the station CA key lives on a SoftHSM2 token (pkcs11: URI); every issued chain
// verifies with `openssl verify -CAfile root -untrusted station-ca leaf`.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "tests/support/emulator_process.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;

namespace {

const std::string softhsm_module = "/usr/lib/softhsm/libsofthsm2.so";

struct HsmStation {
  test::TempDir dir;
  std::string conf = dir.file("softhsm2.conf");

  test::ProcessResult tool(const std::string& program, const std::vector<std::string>& args) const {
    test::ProcessOptions options;
    options.env["SOFTHSM2_CONF"] = conf;
    auto result = test::run_process(program, args, options);
    INFO(program << ": " << result.err);
    REQUIRE(result.exit_code == 0);
    return result;
  }
  test::ProcessResult kiln(const std::vector<std::string>& args) const {
    test::ProcessOptions options;
    options.env["SOFTHSM2_CONF"] = conf;
    options.env["KILN_PKCS11_MODULE"] = softhsm_module;
    options.env["KILN_PKCS11_PIN"] = "1234";
    options.env["KILN_EMU_DIR"] = dir.file("emu");
    return test::run_kiln(args, options);
  }

  // Token "CA" with a P-256 key "station-ca"; a file root CA certifies the token's public key.
  HsmStation() {
    std::filesystem::create_directory(dir.path() / "tokens");
    std::ofstream(conf) << "directories.tokendir = " << dir.file("tokens") << "\nobjectstore.backend = file\nlog.level = ERROR\n";
    tool("/usr/bin/softhsm2-util", {"--init-token", "--free", "--label", "CA", "--pin", "1234", "--so-pin", "5678"});
    tool("/usr/bin/pkcs11-tool", {"--module", softhsm_module, "--login", "--pin", "1234", "--keypairgen", "--key-type",
                                  "EC:prime256v1", "--id", "01", "--label", "station-ca"});
    tool("/usr/bin/pkcs11-tool", {"--module", softhsm_module, "--read-object", "--type", "pubkey", "--id", "01", "-o",
                                  dir.file("hsm.pub.der")});
    tool("/usr/bin/openssl", {"pkey", "-pubin", "-inform", "DER", "-in", dir.file("hsm.pub.der"), "-out", dir.file("hsm.pub.pem")});
    tool("/usr/bin/openssl", {"req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                              "-keyout", dir.file("root.key"), "-subj", "/CN=Product Root", "-days", "30", "-out",
                              dir.file("root.pem")});
    // Any CSR carries the subject; -force_pubkey puts the token's key in the certificate.
    tool("/usr/bin/openssl", {"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                              dir.file("dummy.key"), "-subj", "/CN=Line 1 HSM CA", "-out", dir.file("dummy.csr")});
    std::ofstream(dir.file("ca.ext")) << "basicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign\n"
                                         "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n";
    tool("/usr/bin/openssl", {"x509", "-req", "-in", dir.file("dummy.csr"), "-CA", dir.file("root.pem"), "-CAkey",
                              dir.file("root.key"), "-CAcreateserial", "-force_pubkey", dir.file("hsm.pub.pem"),
                              "-extfile", dir.file("ca.ext"), "-days", "30", "-out", dir.file("ca.pem")});
  }
};

}  // namespace

TEST_CASE("factory e2e: a PKCS#11 CA key issues chains openssl verifies; the key never leaves the token") {
  HsmStation station;
  REQUIRE(station.kiln({"key", "generate", "-t", "ecdsa-p256", "-o", station.dir.file("boot.pem")}).exit_code == 0);
  test::write_vendor_root(station.dir.file("emu"), station.dir.file("vendor.pem"));
  auto init = station.kiln({"factory", "init", "--ca-key", "pkcs11:token=CA;object=station-ca", "--ca-cert",
                            station.dir.file("ca.pem"), "--vendor-root", station.dir.file("vendor.pem"), "--boot-key",
                            station.dir.file("boot.pem"), "--product", "Thermostat", "--service", "https://kiln.example",
                            "--identity", "inject", "-o", station.dir.file("station.toml")});
  REQUIRE_MESSAGE(init.exit_code == 0, init.err);

  test::EmulatorProcess emulator(station.dir.file("emu"), 3);
  auto run = station.kiln({"-o", "json", "factory", "run", "--all", "--jobs", "3", "--profile", station.dir.file("station.toml")});
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);

  auto verify = station.kiln({"factory", "ledger", "verify", "--profile", station.dir.file("station.toml")});
  CHECK_MESSAGE(verify.exit_code == 0, verify.err);
  auto exported = station.kiln({"factory", "ledger", "export", "--profile", station.dir.file("station.toml"), "-o",
                                station.dir.file("units.jsonl")});
  REQUIRE_MESSAGE(exported.exit_code == 0, exported.err);
  std::ifstream in(station.dir.file("units.jsonl"));
  int units = 0;
  for (std::string line; std::getline(in, line);) {
    auto unit = nlohmann::json::parse(line);
    if (unit.contains("bundle_signature")) continue;
    ++units;
    std::ofstream(station.dir.file("leaf.pem")) << unit["certificate"].get<std::string>();
    auto chain = test::run_process("/usr/bin/openssl", {"verify", "-CAfile", station.dir.file("root.pem"), "-untrusted",
                                                        station.dir.file("ca.pem"), station.dir.file("leaf.pem")});
    CHECK_MESSAGE(chain.exit_code == 0, chain.err);
  }
  CHECK(units == 3);
  // Nothing under the station directory holds a private key except the boot key and the test's own root/dummy keys.
  for (const auto& entry : std::filesystem::recursive_directory_iterator(station.dir.path())) {
    if (!entry.is_regular_file() || entry.path().string().find("/tokens/") != std::string::npos) continue;
    auto name = entry.path().filename().string();
    if (name == "boot.pem" || name == "root.key" || name == "dummy.key" || entry.path().string().find("/emu/") != std::string::npos)
      continue;
    std::ifstream file(entry.path(), std::ios::binary);
    std::string content((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    CHECK_MESSAGE(content.find("PRIVATE KEY") == std::string::npos, entry.path().string());
  }
}
