// The update agent: check-in, resumable downloads, board-side verification, test boot, confirm or
// roll back, status reports (contract C2 in docs/board-protocol.md). Never prints to stdout.
#include "emulator/agent.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/base64.hpp"
#include "core/deployment_states.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/file_digest.hpp"
#include "emulator/update_check.hpp"
#include "signing/certificate_builder.hpp"
#include "signing/openssl_ptr.hpp"
#include "signing/signer.hpp"
#include "transport/http_client.hpp"
#include "kiln/version.hpp"

namespace kiln::emu {
namespace fs = std::filesystem;
using Json = nlohmann::json;
// Named in every check-in and status report: which agent build the service is talking to.
constexpr const char* kAgentName = "kiln-board-emu/" KILN_VERSION;
using Clock = std::chrono::steady_clock;

const char* agent_outcome_name(AgentOutcome outcome) {
  switch (outcome) {
    case AgentOutcome::not_ready: return "not-ready";
    case AgentOutcome::idle: return "idle";
    case AgentOutcome::up_to_date: return "up-to-date";
    case AgentOutcome::installed: return "installed";
    case AgentOutcome::rolled_back: return "rolled-back";
    case AgentOutcome::refused: return "refused";
    case AgentOutcome::failed: return "failed";
    case AgentOutcome::retry_later: return "retry-later";
  }
  return "?";
}

namespace {

std::mutex log_mutex;

std::string der_to_pem(const Bytes& der) {
  const unsigned char* p = der.data();
  ossl::Ptr<X509> cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert) throw Error(ExitCode::failure, "the board's certificate chain holds something that is not DER X.509");
  return certificate_pem(cert.get());
}

std::uint64_t file_size_or_zero(const fs::path& path) {
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  return ec ? 0 : size;
}

Bytes sha256_of_file(const fs::path& path) { return file_digest(HashAlg::sha256, path); }

bool is_sha256_hex(const std::string& text) {
  return text.size() == 64 && std::all_of(text.begin(), text.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// A file name for a downloaded object: its id when it is a digest, else a digest of the id.
std::string part_name(const std::string& kind, const std::string& id) {
  std::string safe = is_sha256_hex(id) ? id : to_hex(digest(HashAlg::sha256, as_bytes(id)));
  return kind + "-" + safe + ".part";
}

void write_all_at(int fd, const char* data, std::size_t size, off_t offset) {
  std::size_t done = 0;
  while (done < size) {
    ssize_t n = ::pwrite(fd, data + done, size - done, offset + static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error(ExitCode::failure, fmt::format("cannot write a download: {}", std::strerror(errno)));
    done += static_cast<std::size_t>(n);
  }
}

std::chrono::milliseconds jittered(std::chrono::milliseconds base) {
  static thread_local std::mt19937 rng{std::random_device{}()};
  std::uniform_real_distribution<double> factor(0.9, 1.1);
  return std::chrono::milliseconds(static_cast<long long>(static_cast<double>(base.count()) * factor(rng)));
}

// Decided deployments: "DEP:MANIFEST" (install) or "DEP:MANIFEST:revert" -> final status. A revert
// names a deployment the board may have installed before, so it is a decision of its own.
std::string done_key(const std::string& deployment, const std::string& manifest, const std::string& action) {
  std::string key = deployment + ":" + manifest;
  if (action == "revert") key += ":revert";
  return key;
}

DeploymentOffer::Object parse_object(const Json& j, const std::string& what, std::uint64_t max_size) {
  if (!j.is_object()) throw Error(ExitCode::service, fmt::format("check-in answer: {} is not an object", what));
  DeploymentOffer::Object o;
  auto id = j.find("id");
  auto size = j.find("size");
  auto url = j.find("url");
  if (id == j.end() || !id->is_string() || !is_sha256_hex(id->get<std::string>()))
    throw Error(ExitCode::service, fmt::format("check-in answer: {} id is not a SHA-256 in hex", what));
  if (size == j.end() || !size->is_number_unsigned() || size->get<std::uint64_t>() == 0 ||
      size->get<std::uint64_t>() > max_size)
    throw Error(ExitCode::service, fmt::format("check-in answer: {} size is missing or not 1..{}", what, max_size));
  if (url == j.end() || !url->is_string() || !url->get<std::string>().starts_with("/") ||
      url->get<std::string>().starts_with("//") || url->get<std::string>().size() > 512 ||
      url->get<std::string>().find_first_of(" \r\n") != std::string::npos)
    throw Error(ExitCode::service, fmt::format("check-in answer: {} url is not a path on the service", what));
  o.id = id->get<std::string>();
  o.size = size->get<std::uint64_t>();
  o.url = url->get<std::string>();
  return o;
}

}  // namespace

CheckInReply parse_check_in_reply(std::string_view body, std::uint64_t max_image_size) {
  auto j = Json::parse(body, nullptr, false);
  if (!j.is_object()) throw Error(ExitCode::service, "the check-in answer is not a JSON object");
  CheckInReply reply;
  if (auto after = j.find("check_in_after"); after != j.end() && after->is_number()) {
    double seconds = after->get<double>();
    // The service asks for 1 s .. 1 day (kiln-service --check-in-after): less would have every board flood it.
    if (seconds >= 1 && seconds <= 86400) reply.check_in_after = std::chrono::milliseconds(static_cast<long long>(seconds * 1000));
  }
  if (auto updates = j.find("trust_updates"); updates != j.end() && !updates->is_null()) {
    if (!updates->is_array() || updates->size() > 64)
      throw Error(ExitCode::service, "check-in answer: trust_updates is not an array of at most 64 updates");
    for (const auto& u : *updates) {
      auto version = u.is_object() ? u.find("version") : u.end();
      auto update = u.is_object() ? u.find("update") : u.end();
      if (version == u.end() || !version->is_number_unsigned() || update == u.end() || !update->is_string() ||
          update->get<std::string>().size() > 65536)
        throw Error(ExitCode::service, "check-in answer: a trust update has no version or no base64 update");
      auto bytes = from_base64(update->get<std::string>());
      if (!bytes) throw Error(ExitCode::service, "check-in answer: a trust update is not base64");
      reply.trust_updates.emplace_back(version->get<std::uint64_t>(), std::move(*bytes));
    }
  }
  if (auto from = j.find("trust_deployment"); from != j.end() && !from->is_null()) {
    if (!from->is_string() || from->get<std::string>().empty() || from->get<std::string>().size() > 128)
      throw Error(ExitCode::service, "check-in answer: trust_deployment is not a deployment ID");
    reply.trust_deployment = from->get<std::string>();
  }
  auto d = j.find("deployment");
  if (d == j.end() || d->is_null()) return reply;
  if (!d->is_object()) throw Error(ExitCode::service, "check-in answer: deployment is neither null nor an object");
  DeploymentOffer offer;
  auto id = d->find("id");
  if (id == d->end() || !id->is_string() || id->get<std::string>().empty() || id->get<std::string>().size() > 128)
    throw Error(ExitCode::service, "check-in answer: the deployment has no id");
  offer.id = id->get<std::string>();
  if (auto action = d->find("action"); action != d->end() && !action->is_null()) {
    if (!action->is_string() || (*action != "install" && *action != "revert"))
      throw Error(ExitCode::service, "check-in answer: action is neither install nor revert");
    offer.action = action->get<std::string>();
  }
  if (auto seq = d->find("sequence"); seq != d->end() && seq->is_number_unsigned()) offer.sequence = seq->get<std::uint64_t>();
  if (auto retry = d->find("retry"); retry != d->end() && !retry->is_null()) {
    auto attempt = retry->is_object() ? retry->find("attempt") : retry->end();
    if (attempt == retry->end() || !attempt->is_number_unsigned() || attempt->get<std::uint64_t>() == 0)
      throw Error(ExitCode::service, "check-in answer: retry has no attempt number");
    offer.attempt = attempt->get<std::uint64_t>();
  }
  // A deployment without a manifest is offered (the agent refuses it); anything else malformed is an error.
  if (auto manifest = d->find("manifest"); manifest != d->end() && !manifest->is_null())
    offer.manifest = parse_object(*manifest, "manifest", 1 << 20);
  auto images = d->find("images");
  if (images == d->end() || !images->is_array() || images->empty())
    throw Error(ExitCode::service, fmt::format("check-in answer: deployment {} names no image", offer.id));
  offer.image = parse_object((*images)[0], "image", max_image_size);
  reply.deployment = offer;
  return reply;
}

struct UpdateAgent::Impl {
  Board& board;
  AgentOptions options;
  fs::path dir;  // <board>/agent
  Json state;
  std::unique_ptr<transport::HttpClient> http;
  std::string http_identity;  // what the client was made for: recreate it when this changes
  std::optional<std::chrono::milliseconds> service_interval;
  // The emulator started with a job in its installing phase: the power was lost while it installed.
  bool install_interrupted = false;

  Impl(Board& b, const AgentOptions& o) : board(b), options(o), dir(b.dir() / "agent") {
    state = Json{{"job", nullptr}, {"done", Json::object()}, {"unreported", Json::array()}};
    if (fs::exists(dir / "state.json")) {
      auto saved = Json::parse(read_text_file(dir / "state.json"), nullptr, false);
      if (saved.is_object()) {
        state["job"] = saved.value("job", Json(nullptr));
        state["done"] = saved.value("done", Json::object());
        state["unreported"] = saved.value("unreported", Json::array());
      }
    }
    install_interrupted =
        state["job"].is_object() && parse_status(state["job"].value("phase", "")) == DeviceStatus::installing;
  }

  void log(const std::string& message) const {
    if (!options.verbose) return;
    std::lock_guard lock(log_mutex);
    std::fprintf(stderr, "kiln-board-emu: agent %s: %s\n", board.uid().c_str(), message.c_str());
  }

  void save() {
    fs::create_directories(dir);
    write_file_atomic(dir / "state.json", as_bytes(state.dump(2)));
  }

  // The HTTP client with the device's identity: chain and trust anchor as files in the agent directory,
  // the key where the secure element keeps it.
  transport::HttpClient& client(const AgentView& view) {
    std::string identity = *view.config.service_url + "\n" + *view.config.trust_anchor_pem;
    for (const auto& cert : view.chain) identity.append(cert.begin(), cert.end());
    if (http && identity == http_identity) return *http;
    std::string chain_pem;
    for (const auto& cert : view.chain) chain_pem += der_to_pem(cert);
    fs::create_directories(dir);
    write_file_atomic(dir / "client-chain.pem", as_bytes(chain_pem));
    write_file_atomic(dir / "trust-anchor.pem", as_bytes(*view.config.trust_anchor_pem));
    transport::HttpConfig config;
    config.base_url = *view.config.service_url;
    config.ca_file = (dir / "trust-anchor.pem").string();
    config.client_cert = (dir / "client-chain.pem").string();
    config.client_key = (board.dir() / "device.key.pem").string();
    config.connect_timeout_seconds = 5;
    config.stall_seconds = options.stall_seconds;
    config.max_attempts = 2;
    http = std::make_unique<transport::HttpClient>(config);
    http_identity = identity;
    return *http;
  }

  transport::HttpRequest json_request(const std::string& path, const Json& body) {
    transport::HttpRequest request;
    request.method = "POST";
    request.path = path;
    request.body = body.dump(-1, ' ', false, Json::error_handler_t::replace);  // reasons may quote odd bytes
    // One connection per exchange: hundreds of boards must not each hold a service thread.
    request.headers.push_back("Connection: close");
    return request;
  }

  // Sends a status report for the job's deployment. Final reports that do not get through are kept and sent
  // again later.
  void report(const AgentView& view, DeviceStatus status, const std::string& detail, bool final,
              std::optional<TransientReason> reason = std::nullopt) {
    report_for(state["job"]["deployment"].get<std::string>(), view, status, detail, final, reason);
  }

  void report_for(const std::string& deployment, const AgentView& view, DeviceStatus status,
                  const std::string& detail, bool final, std::optional<TransientReason> reason = std::nullopt) {
    // The service keeps at most 1024 bytes of detail; cut on a UTF-8 boundary.
    std::string cut = detail;
    if (cut.size() > 1000) {
      std::size_t at = 1000;
      while (at > 0 && (static_cast<unsigned char>(cut[at]) & 0xC0) == 0x80) --at;
      cut = cut.substr(0, at) + "...";
    }
    Json body{{"deployment", deployment}, {"status", status_name(status)}, {"detail", cut}};
    body["version"] = view.version.empty() ? Json(nullptr) : Json(view.version);
    body["agent"] = kAgentName;
    if (reason) body["reason"] = transient_reason_name(*reason);
    log(fmt::format("deployment {}: {}{}", body["deployment"].get<std::string>(), status_name(status),
                    detail.empty() ? "" : " (" + detail + ")"));
    if (!send_report(view, body) && final) {
      state["unreported"].push_back(body);
      save();
    }
  }

  // False when the report should be tried again (transport failure or 5xx).
  bool send_report(const AgentView& view, const Json& body) {
    auto request = json_request("/v1/agent/status", body);
    request.idempotency_key = transport::new_idempotency_key();
    try {
      auto response = client(view).send(request);
      if (response.status >= 500) return false;
      if (response.status >= 400) log(fmt::format("the service refused status {}: HTTP {} {}", body["status"].dump(),
                                                  response.status, response.body.substr(0, 200)));
      return true;
    } catch (const Error& e) {
      log(fmt::format("status report failed: {}", e.what()));
      return false;
    }
  }

  void flush_unreported(const AgentView& view) {
    if (state["unreported"].empty()) return;
    Json left = Json::array();
    for (const auto& body : state["unreported"])
      if (!send_report(view, body)) left.push_back(body);
    if (left != state["unreported"]) {
      state["unreported"] = left;
      save();
    }
  }

  CheckInReply check_in(const AgentView& view) {
    Json body{{"version", view.version},
              {"sequence", view.current.sequence},
              {"manifest_digest", view.current.manifest_digest.empty() ? Json(nullptr)
                                                                       : Json(to_hex(view.current.manifest_digest))},
              {"state", std::string(manufacturing_state_name(view.state))},
              {"trust_version", view.trust_version},
              {"agent", kAgentName}};
    auto request = json_request("/v1/agent/check-in", body);
    request.idempotency_key = transport::new_idempotency_key();
    auto response = client(view).send(request);
    if (response.status >= 400) {
      auto error = Json::parse(response.body, nullptr, false);
      std::string message = error.is_object() && error.contains("error") && error["error"].is_object()
                                ? error["error"].value("message", "")
                                : response.body.substr(0, 200);
      throw Error(ExitCode::service, fmt::format("check-in answered HTTP {}: {}", response.status, message));
    }
    return parse_check_in_reply(response.body, view.slot_size);
  }

  // Downloads `url` into `path`, continuing a partial file with a Range request.
  void download(const AgentView& view, const std::string& url, const fs::path& path, std::uint64_t size) {
    std::uint64_t have = file_size_or_zero(path);
    if (size && have == size) return;
    if (size && have > size) {
      fs::remove(path);
      have = 0;
    }
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) throw Error(ExitCode::failure, fmt::format("cannot write {}: {}", path.string(), std::strerror(errno)));
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{fd};
    std::uint64_t written = 0;
    transport::HttpRequest request;
    request.path = url;
    request.content_type = "application/octet-stream";
    request.headers.push_back("Connection: close");
    if (have > 0) request.headers.push_back(fmt::format("Range: bytes={}-", have));
    bool overflow = false;
    request.sink = [&](std::string_view chunk) {
      if (size && have + written + chunk.size() > size) {  // never store more than announced
        overflow = true;
        chunk = chunk.substr(0, static_cast<std::size_t>(size - have - written));
      }
      write_all_at(fd, chunk.data(), chunk.size(), static_cast<off_t>(have + written));
      written += chunk.size();
    };
    log(have ? fmt::format("downloading {} from byte {}", url, have) : fmt::format("downloading {}", url));
    auto response = client(view).send(request);
    if (response.status == 416) {  // our partial file is not a prefix of theirs: start over
      fs::remove(path);
      throw Error(ExitCode::service, fmt::format("{}: the service refused the range from byte {}", url, have));
    }
    if (response.status >= 400) transport::throw_http_error(request, response);
    if (response.status == 200 && have > 0) {
      // The service ignored the range and sent everything from byte 0: start over next time.
      fs::remove(path);
      throw Error(ExitCode::service, fmt::format("{} ignored the range request; downloading it again", url));
    }
    if (overflow) {
      fs::remove(path);
      throw Error(ExitCode::service, fmt::format("{} sent more than the {} bytes announced", url, size));
    }
  }

  AgentOutcome finish(const AgentView& view, DeviceStatus status, const std::string& detail, AgentOutcome outcome) {
    Json& job = state["job"];
    report(view, status, detail, true);
    state["done"][done_key(job["deployment"].get<std::string>(), job["manifest_id"].get<std::string>(),
                           job.value("action", "install"))] = status_name(status);
    for (const char* key : {"manifest_file", "image_file"})
      if (job.contains(key)) fs::remove(dir / job[key].get<std::string>());
    state["job"] = nullptr;
    save();
    return outcome;
  }

  // With a retry policy (the offer has an attempt), a transient failure ends this attempt: reported failed
  // with its reason, the job and its partial files kept for the service's next attempt.
  AgentOutcome transient_failure(const AgentView& view, TransientReason reason, const std::string& detail) {
    Json& job = state["job"];
    job["failed_attempt"] = job.value("attempt", 0);
    save();
    report(view, DeviceStatus::failed, detail, true, reason);
    return AgentOutcome::failed;
  }

  // The job's phase is the status it reports while in it (downloading, verifying, installing, testing).
  void set_phase(DeviceStatus phase) {
    state["job"]["phase"] = status_name(phase);
    save();
  }

  AgentOutcome continue_job() {
    while (true) {
      Json& job = state["job"];
      // Parsed once: a phase this agent does not know (a state file from another version) drops the job below.
      auto phase = parse_status(job.value("phase", ""));
      AgentView view = board.agent_view();
      fs::path manifest_file = dir / job["manifest_file"].get<std::string>();
      fs::path image_file = dir / job["image_file"].get<std::string>();
      if (phase == DeviceStatus::downloading) {
        if (!job.value("reported_downloading", false)) {
          report(view, DeviceStatus::downloading, "", false);
          job["reported_downloading"] = true;
          save();
        }
        try {
          download(view, job["manifest_url"].get<std::string>(), manifest_file, job["manifest_size"].get<std::uint64_t>());
          download(view, job["image_url"].get<std::string>(), image_file, job["image_size"].get<std::uint64_t>());
        } catch (const Error& e) {
          if (!job.contains("attempt")) throw;  // no retry policy: resumed at the next check-in
          return transient_failure(view, TransientReason::download_interrupted, e.what());
        }
        // A complete download must be the object the service named.
        for (const auto& [file, id] : {std::pair{manifest_file, job["manifest_id"].get<std::string>()},
                                       std::pair{image_file, job["image_id"].get<std::string>()}}) {
          if (!is_sha256_hex(id) || to_hex(sha256_of_file(file)) == id) continue;
          fs::remove(file);
          int attempts = job.value("download_attempts", 0) + 1;
          job["download_attempts"] = attempts;
          save();
          if (attempts >= 3)
            return finish(view, DeviceStatus::failed, fmt::format("the download of {} does not match its SHA-256", id),
                          AgentOutcome::failed);
          log(fmt::format("the download of {} does not match its SHA-256; starting it again", id));
          return AgentOutcome::retry_later;
        }
        set_phase(DeviceStatus::verifying);
      } else if (phase == DeviceStatus::verifying) {
        report(view, DeviceStatus::verifying, "", false);
        Bytes envelope = read_file(manifest_file);
        UpdateCheckInput input;
        input.envelope = envelope;
        input.manifest_keys = view.config.manifest_keys;
        input.manifest_threshold = view.config.manifest_threshold;
        input.image = image_file;
        input.boot_key_hashes = view.boot_key_hashes;
        input.installed_sequence = view.current.sequence;
        if (job["action"] == "revert" && !view.previous.manifest_digest.empty())
          input.revert_digest = view.previous.manifest_digest;
        auto opener = board.encryption_key_opener();  // opens content keys inside the secure element
        input.decrypt = opener.get();
        UpdateCheckResult result = check_update(input);
        if (!result.ok())
          return finish(view, DeviceStatus::refused, fmt::format("{}: {}", result.failed_check, result.reason), AgentOutcome::refused);
        job["sequence"] = result.sequence;
        job["envelope_digest"] = to_hex(result.envelope_digest);
        job["image_sha256"] = to_hex(sha256_of_file(image_file));
        set_phase(DeviceStatus::installing);
      } else if (phase == DeviceStatus::installing) {
        if (install_interrupted && job.contains("attempt")) {
          install_interrupted = false;
          return transient_failure(view, TransientReason::power_loss, "the power was lost while the image was written to slot 1");
        }
        install_interrupted = false;
        report(view, DeviceStatus::installing, "", false);
        board.stage_test_image(image_file);
        set_phase(DeviceStatus::testing);
        log("image in the secondary slot; resetting into a test boot");
        board.reset();
      } else if (phase == DeviceStatus::testing) {
        if (to_hex(view.primary_hash) != job["image_sha256"].get<std::string>()) {
          if (!view.last_boot_refusal.empty())  // the bootloader could not open the image
            return finish(view, DeviceStatus::refused, "mcuboot: MCUboot: " + view.last_boot_refusal, AgentOutcome::refused);
          // The test boot did not happen or was reverted (power cycle before the confirm).
          int attempts = job.value("install_attempts", 0) + 1;
          job["install_attempts"] = attempts;
          if (attempts < 3) {
            set_phase(DeviceStatus::installing);
            continue;
          }
          return finish(view, DeviceStatus::rolled_back, "the new image did not stay running through its test boot",
                        AgentOutcome::rolled_back);
        }
        report(view, DeviceStatus::testing, "", false);
        std::string tested = view.version;
        if (options.fail_version && tested == *options.fail_version) {
          board.reset();  // not confirmed: MCUboot swaps the previous image back
          AgentView after = board.agent_view();
          return finish(after, DeviceStatus::rolled_back,
                        fmt::format("version {} failed its health check; MCUboot reverted to {}", tested, after.version),
                        AgentOutcome::rolled_back);
        }
        board.confirm_running();
        Bytes envelope_digest = from_hex(job["envelope_digest"].get<std::string>());
        if (view.current.manifest_digest != envelope_digest)  // not yet recorded (a restart may land here twice)
          board.record_firmware(FirmwareRecord{job["sequence"].get<std::uint64_t>(), envelope_digest});
        return finish(board.agent_view(), DeviceStatus::installed, fmt::format("running {}", tested), AgentOutcome::installed);
      } else {
        state["job"] = nullptr;
        save();
        return AgentOutcome::retry_later;
      }
    }
  }

  // Each in the order given, checked against the trust in force at that step (an offline board catches up
  // through every rotation it missed). The first refused one stops the rest (they build on it) and is
  // reported refused for the trust deployment that handed it. True when at least one was applied.
  bool apply_trust_updates(const CheckInReply& reply) {
    bool applied = false;
    for (const auto& update : reply.trust_updates) {
      trust::Decision decision = board.apply_trust_update(update.second);
      if (!decision.ok()) {
        std::string why = fmt::format("trust update {} refused ({}): {}", update.first, decision.failed_check,
                                      decision.reason);
        log(why);
        if (reply.trust_deployment) report_for(*reply.trust_deployment, board.agent_view(), DeviceStatus::refused, why, true);
        return false;
      }
      applied = true;
      log(fmt::format("trust version {} installed: {} manifest key(s), threshold {}, {} boot key(s)",
                      decision.update.version, decision.update.manifest_keys.size(),
                      decision.update.manifest_threshold, decision.update.boot_key_hashes.size()));
    }
    return applied;
  }

  AgentOutcome run_once() {
    AgentView view = board.agent_view();
    flush_unreported(view);
    CheckInReply reply = check_in(view);
    // Applied trust updates are reported by checking in again at once (the service reads the new trust
    // version: its trust deployment counts the board, and hands the rest of a long catch-up).
    for (int round = 0; round < 8 && apply_trust_updates(reply); ++round) {
      view = board.agent_view();
      reply = check_in(view);
    }
    service_interval = reply.check_in_after;
    if (!reply.deployment) return AgentOutcome::idle;
    const DeploymentOffer& offer = *reply.deployment;
    std::string key = done_key(offer.id, offer.manifest.id, offer.action);
    if (state["done"].contains(key)) return AgentOutcome::up_to_date;
    if (offer.manifest.id.empty()) {
      state["job"] = Json{{"deployment", offer.id}, {"manifest_id", ""}, {"action", offer.action}};
      return finish(view, DeviceStatus::refused, "envelope: the deployment carries no SUIT manifest", AgentOutcome::refused);
    }
    if (offer.manifest.id == to_hex(view.current.manifest_digest)) {
      state["job"] = Json{{"deployment", offer.id}, {"manifest_id", offer.manifest.id}, {"action", offer.action}};
      return finish(view, DeviceStatus::installed, fmt::format("already running {}", view.version), AgentOutcome::up_to_date);
    }
    Json& job = state["job"];
    bool same_job = job.is_object() && job.value("deployment", "") == offer.id &&
                    job.value("manifest_id", "") == offer.manifest.id && job.value("action", "") == offer.action;
    if (same_job && offer.attempt) {
      auto attempt = static_cast<std::int64_t>(*offer.attempt);
      // This attempt failed already: wait for the service's next one.
      if (job.value("failed_attempt", std::int64_t{0}) == attempt) return AgentOutcome::idle;
      if (job.value("attempt", std::int64_t{0}) != attempt) {
        job["attempt"] = attempt;  // a new attempt: report it from its first phase again
        job["reported_downloading"] = false;
        save();
      }
    }
    if (!job.is_object() || job.value("deployment", "") != offer.id || job.value("manifest_id", "") != offer.manifest.id ||
        job.value("action", "") != offer.action) {
      if (job.is_object())
        for (const char* k : {"manifest_file", "image_file"})
          if (job.contains(k)) fs::remove(dir / job[k].get<std::string>());
      state["job"] = Json{{"deployment", offer.id},
                          {"action", offer.action},
                          {"manifest_id", offer.manifest.id},
                          {"manifest_url", offer.manifest.url},
                          {"manifest_size", offer.manifest.size},
                          {"manifest_file", part_name("manifest", offer.manifest.id)},
                          {"image_id", offer.image.id},
                          {"image_url", offer.image.url},
                          {"image_size", offer.image.size},
                          {"image_file", part_name("image", offer.image.id)},
                          {"phase", status_name(DeviceStatus::downloading)}};
      if (offer.attempt) state["job"]["attempt"] = static_cast<std::int64_t>(*offer.attempt);
      log(fmt::format("deployment {} ({}): sequence {}", offer.id, offer.action,
                      offer.sequence ? std::to_string(*offer.sequence) : "?"));
      save();
    }
    return continue_job();
  }
};

UpdateAgent::UpdateAgent(Board& board, const AgentOptions& options) : impl_(std::make_unique<Impl>(board, options)) {}
UpdateAgent::~UpdateAgent() = default;

bool UpdateAgent::ready() const {
  AgentView view = impl_->board.agent_view();
  return view.state == ManufacturingState::device_complete && view.has_device_key && !view.chain.empty() &&
         view.config.service_url && view.config.trust_anchor_pem;
}

AgentOutcome UpdateAgent::run_once() {
  if (!ready()) return AgentOutcome::not_ready;
  AgentOutcome outcome = AgentOutcome::retry_later;
  try {
    outcome = impl_->run_once();
  } catch (const PowerLoss&) {
    // The board lost power mid-write: the emulator exits; in-process, the board just stops.
    if (impl_->options.on_power_loss) impl_->options.on_power_loss();
    outcome = AgentOutcome::failed;
  } catch (const Error& e) {
    impl_->log(e.what());
    outcome = AgentOutcome::retry_later;
  } catch (const std::exception& e) {
    impl_->log(fmt::format("unexpected: {}", e.what()));
    outcome = AgentOutcome::retry_later;
  }
  service_interval_ = impl_->service_interval;
  return outcome;
}

AgentScheduler::AgentScheduler(std::vector<Board*> boards, AgentOptions options) : options_(std::move(options)) {
  std::mt19937 rng{std::random_device{}()};
  auto spread = std::min<std::chrono::milliseconds>(options_.interval, std::chrono::milliseconds(1000));
  std::uniform_int_distribution<long long> first(0, std::max<long long>(1, spread.count()));
  auto now = Clock::now();
  for (Board* board : boards)
    slots_.push_back(Slot{std::make_unique<UpdateAgent>(*board, options_), now + std::chrono::milliseconds(first(rng))});
}

AgentScheduler::~AgentScheduler() { stop(); }

void AgentScheduler::start() {
  int n = std::max(1, std::min<int>(options_.workers, static_cast<int>(slots_.size())));
  for (int i = 0; i < n; ++i) threads_.emplace_back([this] { work(); });
}

void AgentScheduler::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

void AgentScheduler::work() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    Slot* next = nullptr;
    for (auto& slot : slots_)
      if (!slot.busy && (!next || slot.due < next->due)) next = &slot;
    if (!next) {
      wake_.wait(lock);
      continue;
    }
    if (next->due > Clock::now()) {
      wake_.wait_until(lock, next->due);
      continue;
    }
    next->busy = true;
    lock.unlock();
    AgentOutcome outcome = next->agent->run_once();
    lock.lock();
    auto interval = options_.interval;
    if (outcome == AgentOutcome::not_ready) {
      interval = std::min<std::chrono::milliseconds>(interval, std::chrono::milliseconds(1000));
    } else if (auto asked = next->agent->service_interval(); asked && *asked < interval) {
      interval = *asked;  // the service may ask for sooner, never for a flood
    }
    next->due = Clock::now() + jittered(interval);
    next->busy = false;
    wake_.notify_all();
  }
}

}  // namespace kiln::emu
