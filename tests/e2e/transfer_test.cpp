// End to end ownership transfer and unclaim (issue 17 item 4) with the real binaries: two emulated boards
// with agents, the service and kiln. `kiln device unclaim` returns a board to unclaimed; `kiln device transfer
// create` issues a voucher for the other to tenant globex, which redeems it with `kiln device transfer
// accept` while the board signs its challenge over its link; the board then installs globex's release and is
// gone from the old tenant. Bad input: an unknown UID (exit 9), an unclaimed device (7), an edited or
// truncated voucher (3), a voucher for another tenant (6), a replayed one (7), an expired one (3).
#include <doctest/doctest.h>

#include <fstream>
#include <string>
#include <thread>

#include "tests/support/ota_fleet.hpp"

using namespace kiln;
using Json = nlohmann::json;

namespace {

// A tenant of the fleet's service with its own admin token.
struct Tenant {
  std::string name, token;
};

Tenant create_tenant(test::OtaFleet& fleet, const std::string& name) {
  auto token_file = fleet.file(name + ".token");
  auto r = test::run_process(test::bin_path("kiln-service"),
                             {"tenant", "create", "--dir", fleet.service_dir(), "--name", name, "--token-file", token_file});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  std::ifstream in(token_file);
  std::string token;
  std::getline(in, token);
  return {name, token};
}

// kiln as `tenant` (boards found through the fleet's emulator directory).
test::ProcessResult kiln_as(test::OtaFleet& fleet, const Tenant& tenant, std::vector<std::string> args) {
  test::ProcessOptions o;
  o.env["XDG_CONFIG_HOME"] = fleet.file("xdg");
  o.env["KILN_EMU_DIR"] = fleet.emu_dir();
  o.env["KILN_SERVICE"] = fleet.service().url();
  o.env["KILN_CA_FILE"] = fleet.service_dir() + "/ca.pem";
  o.env["KILN_TOKEN"] = tenant.token;
  o.timeout_seconds = 60;
  return test::run_kiln(args, o);
}

Json json_as(test::OtaFleet& fleet, const Tenant& tenant, std::vector<std::string> args) {
  args.insert(args.begin(), {"-o", "json"});
  auto r = kiln_as(fleet, tenant, args);
  INFO(args[2] << " " << args[3] << ": " << r.err);
  REQUIRE(r.exit_code == 0);
  return Json::parse(r.out);
}

void write(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("transfer e2e: unclaim, then a voucher moves a board to another tenant, which updates it") {
  test::OtaFleetOptions options;
  options.boards = 2;
  options.factory_firmware = false;  // boards run 1.0.0 with the release key as manifest key
  test::OtaFleet fleet(options);
  auto moving = fleet.uids().at(0), leaving = fleet.uids().at(1);
  // Tenants are made by kiln-service itself on the data directory: with the agents stopped meanwhile, so no
  // request writes to the SQLite store while that second process does.
  fleet.stop_emulator();
  auto globex = create_tenant(fleet, "globex");
  auto initech = create_tenant(fleet, "initech");
  fleet.start_emulator();
  // The new owner's product of the same name, trusting what the boards trust.
  json_as(fleet, globex, {"product", "create", "Thermo", "--boot-key", fleet.file("release.pem"), "--manifest-key",
                          fleet.file("release.pem")});

  // kiln device unclaim: unclaimed, out of its group; again: exit 7; an unknown UID: exit 9, nothing changed.
  auto unclaimed = fleet.json({"device", "unclaim", leaving});
  REQUIRE(unclaimed.size() == 1);
  CHECK(unclaimed[0]["claimed"] == false);
  CHECK(unclaimed[0]["group"].is_null());
  CHECK(fleet.kiln({"device", "unclaim", leaving}).exit_code == 7);
  auto unknown = fleet.kiln({"device", "unclaim", moving, "NO-SUCH-UID"});
  CHECK_MESSAGE(unknown.exit_code == 9, unknown.err);
  CHECK(fleet.json({"device", "show", moving})["claimed"] == true);

  // kiln device transfer create: an unknown UID exits 9, an unclaimed device 7; the voucher names the board.
  auto voucher = fleet.file("voucher.json");
  CHECK(fleet.kiln({"device", "transfer", "create", "NO-SUCH-UID", "--to-tenant", "globex", "-o", voucher}).exit_code == 9);
  CHECK(fleet.kiln({"device", "transfer", "create", leaving, "--to-tenant", "globex", "-o", voucher}).exit_code == 7);
  auto made = fleet.json({"device", "transfer", "create", moving, "--to-tenant", "globex", "-o", voucher});
  CHECK(made["devices"] == 1);
  auto text = read(voucher);
  auto v = Json::parse(text);
  CHECK(v["to_tenant"] == "globex");
  CHECK(v["devices"] == Json::array({moving}));

  // Edited (another device added, the expiry pushed out) or truncated: exit 3, nothing changed.
  for (const auto& edit : std::vector<std::pair<std::string, Json>>{
           {"devices", Json::array({moving, leaving})}, {"expires_at", "2099-01-01T00:00:00Z"}}) {
    const std::string field = edit.first;
    auto edited = v;
    edited[field] = edit.second;
    write(fleet.file("edited.json"), edited.dump(2));
    auto r = kiln_as(fleet, globex, {"device", "transfer", "accept", fleet.file("edited.json")});
    CHECK_MESSAGE(r.exit_code == 3, field, ": ", r.err);
  }
  write(fleet.file("truncated.json"), text.substr(0, text.size() / 2));
  auto truncated = kiln_as(fleet, globex, {"device", "transfer", "accept", fleet.file("truncated.json")});
  CHECK_MESSAGE(truncated.exit_code == 3, truncated.err);
  // For another tenant: exit 6.
  auto stranger = kiln_as(fleet, initech, {"device", "transfer", "accept", voucher});
  CHECK_MESSAGE(stranger.exit_code == 6, stranger.err);
  CHECK_MESSAGE(stranger.err.find("globex") != std::string::npos, stranger.err);
  CHECK(fleet.json({"device", "show", moving})["claimed"] == true);

  // Redeemed by globex, the board signing its challenge over its link.
  auto accepted = json_as(fleet, globex, {"device", "transfer", "accept", voucher});
  REQUIRE(accepted.size() == 1);
  CHECK(accepted[0]["id"] == moving);
  CHECK(accepted[0]["claimed"] == true);
  CHECK(fleet.kiln({"device", "show", moving}).exit_code == 9);  // gone from the old tenant
  // Replayed: exit 7.
  auto replay = kiln_as(fleet, globex, {"device", "transfer", "accept", voucher});
  CHECK_MESSAGE(replay.exit_code == 7, replay.err);

  // Expired: globex gives the board back with a one-second voucher, redeemed too late: exit 3.
  auto brief = fleet.file("brief.json");
  REQUIRE(kiln_as(fleet, globex,
                  {"device", "transfer", "create", moving, "--to-tenant", "default", "--expires", "1s", "-o", brief})
              .exit_code == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  auto expired = fleet.kiln({"device", "transfer", "accept", brief});
  CHECK_MESSAGE(expired.exit_code == 3, expired.err);
  CHECK_MESSAGE(expired.err.find("expired") != std::string::npos, expired.err);

  // The board's agent keeps checking in, now for globex, and installs globex's release (the product made its
  // groups).
  json_as(fleet, globex, {"device", "assign", moving, "--group", "Thermo/Field Test"});
  auto image = fleet.sign_image("1.1.0");
  auto manifest = fleet.make_manifest(image, 2);
  auto uploaded = json_as(fleet, globex, {"image", "upload", image, "--manifest", manifest});
  auto deployment = json_as(fleet, globex,
                            {"deployment", "create", "--group", "Thermo/Field Test", "--image",
                             uploaded["id"].get<std::string>(), "--rollout", "100%"});
  auto id = deployment["id"].get<std::string>();
  CHECK(test::OtaFleet::wait_for([&] { return fleet.agent_outcome(moving, id) == "installed"; }, 60));
  CHECK(fleet.agent_outcome(leaving, id).empty());  // the unclaimed board is offered nothing
  CHECK(fleet.board_version(moving) == "1.1.0");
  CHECK(fleet.board_version(leaving) == "1.0.0");
}
