// Tests for SmpClient over a scripted link: in-order matching, stale answers, timeouts and retries.
#include <doctest/doctest.h>

#include "core/error.hpp"
#include "transport/smp_client.hpp"
#include "tests/support/scripted_link.hpp"

using namespace kiln;

namespace {

using test::ScriptedLink;
using test::answer;
using test::quick;

SmpRequest echo_request(const std::string& text) {
  return {smp::Op::write, smp::group::os, 0, {{"d", text}}};
}

}  // namespace

TEST_CASE("smp client: a window of requests is answered in order") {
  int sends = 0;
  SmpClient client(std::make_unique<ScriptedLink>(
                       [](const smp::Frame& f) { return std::vector{answer(f, {{"r", f.body["d"]}})}; }, &sends),
                   quick());
  for (int i = 0; i < 4; ++i) client.send(echo_request(std::to_string(i)));
  CHECK(client.in_flight() == 4);
  for (int i = 0; i < 4; ++i) CHECK(client.receive()["r"] == std::to_string(i));
  CHECK(client.in_flight() == 0);
}

TEST_CASE("smp client: an answer for a later request first is a protocol error") {
  int sends = 0;
  std::optional<smp::Frame> held;
  SmpClient client(std::make_unique<ScriptedLink>(
                       [&](const smp::Frame& f) {
                         if (!held) {  // hold back the first answer, send it after the second
                           held = answer(f, {{"r", "first"}});
                           return std::vector<smp::Frame>{};
                         }
                         return std::vector{answer(f, {{"r", "second"}}), *held};
                       },
                       &sends),
                   quick());
  client.send(echo_request("a"));
  client.send(echo_request("b"));
  CHECK_THROWS_WITH_AS(client.receive(), doctest::Contains("out of order"), Error);
}

TEST_CASE("smp client: reads are retried after a timeout and late answers are skipped; writes are not") {
  int sends = 0;
  int calls = 0;
  std::optional<smp::Frame> late;
  auto board = [&](const smp::Frame& f) {
    ++calls;
    if (calls == 1) {  // the first answer is late: it arrives just before the retry's answer
      late = answer(f, {{"ok", 1}});
      return std::vector<smp::Frame>{};
    }
    return std::vector{*late, answer(f, {{"ok", calls}})};
  };
  SmpClient client(std::make_unique<ScriptedLink>(board, &sends), quick());
  auto body = client.call({smp::Op::read, smp::group::os, 6, smp::Body::object()});
  CHECK(sends == 2);
  CHECK(body["ok"] == 2);

  int write_sends = 0;
  SmpClient writer(std::make_unique<ScriptedLink>([](const smp::Frame&) { return std::vector<smp::Frame>{}; },
                                                  &write_sends),
                   quick());
  CHECK_THROWS_WITH_AS(writer.call(echo_request("x")), doctest::Contains("emu:/scripted.sock"), Error);
  CHECK(write_sends == 1);
}

TEST_CASE("smp client: rc and group errors become errors naming the board") {
  int sends = 0;
  SmpClient client(std::make_unique<ScriptedLink>(
                       [](const smp::Frame& f) { return std::vector{answer(f, smp::error_body(smp::rc::busy))}; }, &sends),
                   quick());
  CHECK_THROWS_WITH_AS(client.call(echo_request("x")), doctest::Contains("busy (10)"), Error);
  auto raw = client.call_raw(echo_request("y"));
  CHECK(smp::response_outcome(raw).rc == smp::rc::busy);
}

TEST_CASE("smp client: a response with a sequence no request had is a protocol error at once, not a timeout") {
  int sends = 0;
  SmpClient client(std::make_unique<ScriptedLink>(
                       [](const smp::Frame& f) {
                         auto reply = answer(f, {{"r", "x"}});
                         reply.header.sequence = static_cast<std::uint8_t>(f.header.sequence + 7);
                         return std::vector{reply};
                       },
                       &sends),
                   quick());
  try {
    client.call({smp::Op::read, smp::group::os, 6, smp::Body::object()});
    FAIL("a wrong sequence must not pass");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::board);
    CHECK(std::string(e.what()).find("protocol error: response sequence 7 does not match request 0") !=
          std::string::npos);
  }
  CHECK(sends == 1);  // not retried as if it had timed out
}
