// A link whose board side is a function of each request frame, for the transport tests that script a board's
// answers (smp_client, board_api, provisioning_group). Header-only.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "transport/smp.hpp"
#include "transport/smp_client.hpp"

namespace kiln::test {

// A link whose board side is a function from request frame to zero or more response frames.
class ScriptedLink final : public Link {
 public:
  using Board = std::function<std::vector<smp::Frame>(const smp::Frame&)>;
  explicit ScriptedLink(Board board, int* sends = nullptr) : board_(std::move(board)), sends_(sends) {}
  void send(ByteView packet) override {
    if (sends_) ++*sends_;
    for (auto& reply : board_(smp::decode_frame(packet))) pending_.push_back(smp::encode_frame(reply.header, reply.body));
  }
  std::optional<Bytes> receive(std::chrono::milliseconds) override {
    if (pending_.empty()) return std::nullopt;
    Bytes packet = std::move(pending_.front());
    pending_.pop_front();
    return packet;
  }
  std::string address() const override { return "emu:/scripted.sock"; }

 private:
  Board board_;
  int* sends_ = nullptr;
  std::deque<Bytes> pending_;
};

inline smp::Frame answer(const smp::Frame& request, smp::Body body) {
  smp::Frame reply{request.header, std::move(body)};
  reply.header.op = smp::response_op(request.header.op);
  return reply;
}

// Quick timeouts: a scripted board that does not answer fails a call in a fraction of a second.
inline SmpClientOptions quick() {
  SmpClientOptions options;
  options.timeout = std::chrono::milliseconds(50);
  options.read_retries = 2;
  return options;
}

}  // namespace kiln::test
