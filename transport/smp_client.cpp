// SmpClient: windowed SMP requests with in-order matching, timeouts and read retries.
#include "transport/smp_client.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "core/error.hpp"
#include "core/interrupt.hpp"

namespace kiln {
namespace {

std::string command_name(std::uint16_t group, std::uint8_t command) {
  return fmt::format("SMP group {} command {}", group, command);
}

}  // namespace

SmpClient::SmpClient(std::unique_ptr<Link> link, SmpClientOptions options)
    : link_(std::move(link)), options_(options), board_(link_->address()) {
  if (options_.window == 0) options_.window = 1;
}

void SmpClient::reconnect(std::unique_ptr<Link> link) {
  link_ = std::move(link);
  in_flight_.clear();
  abandoned_.clear();
}

void SmpClient::send(const SmpRequest& request) {
  smp::Header header;
  header.op = request.op;
  header.group = request.group;
  header.command = request.command;
  header.sequence = next_sequence_++;
  link_->send(smp::encode_frame(header, request.body));
  in_flight_.push_back({header.sequence, request.op, request.group, request.command});
}

std::optional<smp::Body> SmpClient::await_response(const InFlight& expected, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    check_interrupted();
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    // Wake up at least every 200 ms so Ctrl-C is honoured during long waits.
    auto packet = link_->receive(std::min(left, std::chrono::milliseconds(200)));
    if (!packet) continue;
    smp::Frame frame;
    try {
      frame = smp::decode_frame(*packet);
    } catch (Error& e) {
      throw Error(ExitCode::board, fmt::format("board {} sent a damaged packet: {}", board_, e.what()), e.hint());
    }
    const auto& h = frame.header;
    if (!smp::is_response(h.op)) continue;  // not for us
    if (h.sequence != expected.sequence) {
      bool later = std::any_of(in_flight_.begin(), in_flight_.end(),
                               [&](const InFlight& f) { return f.sequence == h.sequence; });
      if (later)
        throw Error(ExitCode::board,
                    fmt::format("protocol error: board {} answered out of order (sequence {} before {})", board_,
                                h.sequence, expected.sequence),
                    "the board's SMP server must answer requests in the order it receives them");
      // Only the late answer to a request this client gave up on (and retried) is skipped; any
      // other sequence is a board that does not echo it, which waiting longer cannot fix.
      if (std::find(abandoned_.begin(), abandoned_.end(), h.sequence) != abandoned_.end()) continue;
      throw Error(ExitCode::board,
                  fmt::format("protocol error: response sequence {} does not match request {} (board {}, {})",
                              h.sequence, expected.sequence, board_, command_name(expected.group, expected.command)),
                  "the board's SMP server must copy each request's sequence number into its response");
    }
    if (h.group != expected.group || h.command != expected.command || h.op != smp::response_op(expected.op))
      throw Error(ExitCode::board,
                  fmt::format("board {} answered {} with {}", board_, command_name(expected.group, expected.command),
                              command_name(h.group, h.command)));
    return std::move(frame.body);
  }
}

smp::Body SmpClient::receive() {
  if (in_flight_.empty()) throw Error(ExitCode::failure, "SmpClient::receive with nothing in flight");
  InFlight expected = in_flight_.front();
  auto body = await_response(expected, options_.timeout);
  if (!body)
    throw Error(ExitCode::board,
                fmt::format("board {} did not answer {} within {} ms", board_,
                            command_name(expected.group, expected.command), options_.timeout.count()),
                "the board may be hung or busy: reset or power-cycle it, or raise --timeout");
  in_flight_.pop_front();
  return std::move(*body);
}

smp::Body SmpClient::call_raw(const SmpRequest& request) {
  while (!in_flight_.empty()) receive();
  int attempts = request.op == smp::Op::read ? 1 + options_.read_retries : 1;
  for (int attempt = 1;; ++attempt) {
    send(request);
    InFlight expected = in_flight_.back();
    auto body = await_response(expected, options_.timeout);
    in_flight_.clear();
    if (body) return std::move(*body);
    // Its answer may still come, late, before the retry's: remember it as one to skip.
    abandoned_.push_back(expected.sequence);
    if (abandoned_.size() > 16) abandoned_.pop_front();
    if (attempt >= attempts)
      throw Error(ExitCode::board,
                  fmt::format("board {} did not answer {} within {} ms{}", board_,
                              command_name(request.group, request.command), options_.timeout.count(),
                              attempts > 1 ? fmt::format(" ({} attempts)", attempts) : ""),
                  "the board may be hung or busy: reset or power-cycle it, or raise --timeout");
  }
}

smp::Body SmpClient::call(const SmpRequest& request) {
  auto body = call_raw(request);
  check_response(board_, request, body);
  return body;
}

void check_response(const std::string& board, const SmpRequest& request, const smp::Body& response) {
  auto outcome = smp::response_outcome(response);
  if (outcome.ok()) return;
  std::string what = outcome.group ? fmt::format("group error {}", outcome.rc) : smp::rc_name(outcome.rc);
  // MCUmgr's verbose error responses carry the reason as text ("rsn").
  if (auto rsn = response.find("rsn"); rsn != response.end() && rsn->is_string() && !rsn->get<std::string>().empty())
    what += ": " + rsn->get<std::string>().substr(0, 512);
  throw Error(ExitCode::board,
              fmt::format("board {}: {} failed: {}", board, command_name(request.group, request.command), what));
}

}  // namespace kiln
