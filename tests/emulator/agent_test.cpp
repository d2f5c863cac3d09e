// Tests for the update agent's check-in answer parser: contract C2 answers are accepted, anything
// that would make the board fetch from elsewhere or without bounds is refused.
#include <doctest/doctest.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "emulator/agent.hpp"

using namespace kiln;
using Json = nlohmann::json;

namespace {

constexpr std::uint64_t slot_size = 16u << 20;

Json offer_json() {
  return Json{{"device", "d1"},
              {"check_in_after", 30},
              {"deployment",
               {{"id", "dep_1"},
                {"wave", 1},
                {"action", "install"},
                {"sequence", 5},
                {"manifest", {{"id", std::string(64, 'a')}, {"size", 300}, {"url", "/v1/agent/deployments/dep_1/manifest"}}},
                {"images", Json::array({{{"id", std::string(64, 'b')}, {"size", 1000}, {"url", "/v1/agent/images/b/content"}}})}}}};
}

bool refused(const Json& answer) {
  try {
    emu::parse_check_in_reply(answer.dump(), slot_size);
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::service);
    return true;
  }
  return false;
}

}  // namespace

TEST_CASE("agent: a contract C2 check-in answer parses") {
  auto reply = emu::parse_check_in_reply(offer_json().dump(), slot_size);
  REQUIRE(reply.deployment);
  CHECK(reply.check_in_after == std::chrono::milliseconds(30000));
  CHECK(reply.deployment->id == "dep_1");
  CHECK(reply.deployment->action == "install");
  CHECK(reply.deployment->sequence == 5u);
  CHECK(reply.deployment->manifest.size == 300);
  CHECK(reply.deployment->image.url == "/v1/agent/images/b/content");

  auto idle = emu::parse_check_in_reply(R"({"device":"d1","check_in_after":60,"deployment":null})", slot_size);
  CHECK_FALSE(idle.deployment);
  // A check_in_after below 1 s (or not a number of seconds) is ignored: the board keeps its own interval.
  for (const char* after : {"0.001", "0", "-5", "1e9", "\"1\""}) {
    auto odd = emu::parse_check_in_reply(fmt::format(R"({{"check_in_after":{},"deployment":null}})", after), slot_size);
    CHECK_MESSAGE(!odd.check_in_after, std::string(after));
  }
  CHECK(emu::parse_check_in_reply(R"({"check_in_after":1,"deployment":null})", slot_size).check_in_after ==
        std::chrono::milliseconds(1000));

  auto revert = offer_json();
  revert["deployment"]["action"] = "revert";
  revert["deployment"]["sequence"] = nullptr;
  auto r = emu::parse_check_in_reply(revert.dump(), slot_size);
  CHECK(r.deployment->action == "revert");
  CHECK_FALSE(r.deployment->sequence);

  auto no_manifest = offer_json();
  no_manifest["deployment"]["manifest"] = nullptr;
  CHECK(emu::parse_check_in_reply(no_manifest.dump(), slot_size).deployment->manifest.id.empty());  // the agent refuses it
}

TEST_CASE("agent: trust updates come with the trust deployment that hands them") {
  auto a = offer_json();
  a["trust_updates"] = Json::array({Json{{"version", 1}, {"update", "AQID"}}, Json{{"version", 2}, {"update", "BA=="}}});
  a["trust_deployment"] = "dep_9";
  auto reply = emu::parse_check_in_reply(a.dump(), slot_size);
  REQUIRE(reply.trust_updates.size() == 2);
  CHECK(reply.trust_updates[0] == std::pair<std::uint64_t, Bytes>{1, Bytes{1, 2, 3}});
  CHECK(reply.trust_updates[1].first == 2);
  CHECK(reply.trust_deployment == std::optional<std::string>("dep_9"));
  CHECK_FALSE(emu::parse_check_in_reply(offer_json().dump(), slot_size).trust_deployment);
  a["trust_deployment"] = 9;
  CHECK(refused(a));
  a["trust_deployment"] = "";
  CHECK(refused(a));
}

TEST_CASE("agent: malformed or dangerous check-in answers are refused") {
  CHECK(refused("not json"));
  CHECK(refused(Json::array()));
  auto a = offer_json();
  a["deployment"]["images"][0]["url"] = "https://elsewhere.example/x";
  CHECK(refused(a));
  a = offer_json();
  a["deployment"]["images"][0]["url"] = "//elsewhere.example/x";
  CHECK(refused(a));
  a = offer_json();
  a["deployment"]["manifest"]["url"] = "/x\r\nHost: evil";
  CHECK(refused(a));
  a = offer_json();
  a["deployment"]["images"][0]["size"] = 0;
  CHECK(refused(a));
  a = offer_json();
  a["deployment"]["manifest"]["size"] = 10 << 20;  // no SUIT envelope is that big
  CHECK(refused(a));
  a = offer_json();
  a["deployment"]["images"][0]["size"] = slot_size;  // exactly a slot: fits
  CHECK_FALSE(refused(a));
  a["deployment"]["images"][0]["size"] = slot_size + 1;  // the board could not hold it
  CHECK(refused(a));
  a["deployment"]["images"][0]["size"] = std::uint64_t{1} << 31;
  CHECK(refused(a));
  a = offer_json();
  a["deployment"]["images"][0]["id"] = "../../etc/passwd";
  CHECK(refused(a));
  a = offer_json();
  a["deployment"]["images"] = Json::array();
  CHECK(refused(a));
  a = offer_json();
  a["deployment"]["action"] = "wipe";
  CHECK(refused(a));
  a = offer_json();
  a["deployment"]["id"] = 7;
  CHECK(refused(a));
}

TEST_CASE("agent: an offer's retry names the attempt (the agent then reports transient failures)") {
  CHECK_FALSE(emu::parse_check_in_reply(offer_json().dump(), slot_size).deployment->attempt);
  auto a = offer_json();
  a["deployment"]["retry"] = nullptr;
  CHECK_FALSE(emu::parse_check_in_reply(a.dump(), slot_size).deployment->attempt);
  a["deployment"]["retry"] = {{"attempt", 2}, {"attempts", 4}};
  CHECK(emu::parse_check_in_reply(a.dump(), slot_size).deployment->attempt == 2u);
  for (const Json& bad : {Json(2), Json{{"attempt", 0}}, Json{{"attempt", -1}}, Json{{"attempt", "2"}}, Json::object()}) {
    a["deployment"]["retry"] = bad;
    CHECK_MESSAGE(refused(a), bad.dump());
  }
}
