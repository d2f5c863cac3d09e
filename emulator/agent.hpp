// The on-board update agent: each device-complete board checks in with its security service over
// mutual TLS (device certificate chain, secure-element key), takes its deployment, downloads the
// SUIT envelope and the image (resumable), verifies them as the board's bootloader would, installs
// to the secondary slot, test-boots, confirms or rolls back, and reports each state. Its progress
// is kept in the board directory (agent/), so it resumes after an emulator restart.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "emulator/board.hpp"

namespace kiln::emu {

struct AgentOptions {
  std::chrono::milliseconds interval{60000};  // between check-ins, jittered +-10%
  std::optional<std::string> fail_version;    // a running image of this version fails its health check
  bool verbose = false;                       // log activity to stderr
  int workers = 4;                            // threads shared by all boards' agents
  long stall_seconds = 10;                    // abort a download that stalls this long (resumed next time)
  // Called when an install hits --power-loss-at: the emulator process exits as if the power were cut.
  std::function<void()> on_power_loss;
};

// A check-in answer (contract C2, docs/board-protocol.md), validated.
struct DeploymentOffer {
  struct Object {
    std::string id;         // SHA-256 hex of the content
    std::uint64_t size = 0;
    std::string url;        // a path on the same service ("/v1/agent/...")
  };
  std::string id;
  std::string action = "install";  // or "revert"
  std::optional<std::uint64_t> sequence;
  // With a retry policy: the attempt this offer is for. The agent then reports a transient failure (a
  // download cut, power lost while it installed) as failed with a reason and waits for the service's next
  // attempt, instead of resuming by itself.
  std::optional<std::uint64_t> attempt;
  Object manifest;  // id empty: the deployment carries no manifest (the agent refuses it)
  Object image;
};
struct CheckInReply {
  std::optional<DeploymentOffer> deployment;
  std::optional<std::chrono::milliseconds> check_in_after;
  // Trust updates above the version the board reported, in the order the service gave them (version order):
  // (version, signed CBOR). The board checks each against the trust in force when it applies it.
  std::vector<std::pair<std::uint64_t, Bytes>> trust_updates;
  // The trust deployment that handed them: a refusal is reported to it.
  std::optional<std::string> trust_deployment;
};
// Throws Error(service) naming what is wrong: the body comes from the network. An image larger than
// `max_image_size` (the board's slot size) is refused: the board could not hold it.
CheckInReply parse_check_in_reply(std::string_view body, std::uint64_t max_image_size);

// What one step of the agent did (for logs and tests).
enum class AgentOutcome { not_ready, idle, up_to_date, installed, rolled_back, refused, failed, retry_later };
const char* agent_outcome_name(AgentOutcome outcome);

// One board's agent. Not thread-safe: one caller at a time (the scheduler guarantees it).
class UpdateAgent {
 public:
  UpdateAgent(Board& board, const AgentOptions& options);
  ~UpdateAgent();
  UpdateAgent(const UpdateAgent&) = delete;
  UpdateAgent& operator=(const UpdateAgent&) = delete;

  // Device-complete with a service URL, trust anchor, device key and chain.
  bool ready() const;
  // One check-in and everything it leads to (download, verify, install, test, report). Never throws
  // for service or verification problems: they are logged and retried at the next check-in.
  AgentOutcome run_once();
  // The service's check_in_after from the last check-in, if it gave one.
  std::optional<std::chrono::milliseconds> service_interval() const { return service_interval_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::optional<std::chrono::milliseconds> service_interval_;
};

// Runs the agents of many boards on a few worker threads, each board at its own jittered interval.
class AgentScheduler {
 public:
  AgentScheduler(std::vector<Board*> boards, AgentOptions options);
  ~AgentScheduler();
  AgentScheduler(const AgentScheduler&) = delete;
  AgentScheduler& operator=(const AgentScheduler&) = delete;
  void start();
  void stop();

 private:
  void work();
  struct Slot {
    std::unique_ptr<UpdateAgent> agent;
    std::chrono::steady_clock::time_point due;
    bool busy = false;
  };
  AgentOptions options_;
  std::vector<Slot> slots_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace kiln::emu
