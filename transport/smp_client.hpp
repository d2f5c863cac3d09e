// SmpClient: SMP requests over a Link with sequence numbers, a window of requests in flight,
// in-order response matching, timeouts that name the board, and retries for idempotent reads.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include "transport/link.hpp"
#include "transport/smp.hpp"

namespace kiln {

struct SmpRequest {
  smp::Op op = smp::Op::read;
  std::uint16_t group = 0;
  std::uint8_t command = 0;
  smp::Body body = smp::Body::object();
};

struct SmpClientOptions {
  std::chrono::milliseconds timeout{5000};
  int read_retries = 2;     // extra attempts for reads that time out; writes are never repeated
  std::size_t window = 8;   // requests in flight at most (further capped by the board's buffer count)
};

class SmpClient {
 public:
  SmpClient(std::unique_ptr<Link> link, SmpClientOptions options = {});

  // One request, one response body (which may carry rc / err: see smp::response_outcome).
  // Throws Error(board) on timeout (naming the board and command), a broken link, or a response
  // whose sequence number matches no request ("protocol error: response sequence N does not
  // match request M"); only late answers to requests that timed out and were retried are skipped.
  smp::Body call_raw(const SmpRequest& request);
  // As call_raw, but a non-zero rc or err becomes Error(board) naming the board and command.
  smp::Body call(const SmpRequest& request);

  // Pipelining: send() puts a request in flight (call only while in_flight() < window());
  // receive() returns the response to the oldest request in flight.
  void send(const SmpRequest& request);
  smp::Body receive();
  std::size_t in_flight() const { return in_flight_.size(); }
  std::size_t window() const { return options_.window; }
  void set_window(std::size_t window) { options_.window = window == 0 ? 1 : window; }

  const std::string& board() const { return board_; }
  // Replaces the link after the board reset (the connection drops on reset).
  void reconnect(std::unique_ptr<Link> link);

 private:
  struct InFlight {
    std::uint8_t sequence;
    smp::Op op;
    std::uint16_t group;
    std::uint8_t command;
  };
  std::optional<smp::Body> await_response(const InFlight& expected, std::chrono::milliseconds timeout);

  std::unique_ptr<Link> link_;
  SmpClientOptions options_;
  std::string board_;
  std::uint8_t next_sequence_ = 0;
  std::deque<InFlight> in_flight_;
  std::deque<std::uint8_t> abandoned_;  // sequences of timed-out requests whose answers may come late
};

// Throws Error(board) "board X: <what> failed: <rc>" if the response carries rc/err.
void check_response(const std::string& board, const SmpRequest& request, const smp::Body& response);

}  // namespace kiln
