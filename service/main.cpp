// kiln-service: init (TLS material, database, tenant, admin token), run (HTTPS API), tenant/token admin.
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <filesystem>
#include <iostream>
#include <string_view>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <openssl/ssl.h>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "service/api.hpp"
#include "service/config_file.hpp"
#include "service/connection_guard.hpp"
#include "service/elastic_task_queue.hpp"
#include "service/manual.hpp"
#include "service/sd_notify.hpp"
#include "service/session_cache.hpp"
#include "service/store.hpp"
#include "service/tls_material.hpp"
#include "service/ticket_keys.hpp"
#include "service/transfer_voucher.hpp"
#include "kiln/version.hpp"

namespace fs = std::filesystem;
using namespace kiln;

namespace {

struct Paths {
  fs::path dir;
  fs::path tls_certificate, tls_key;  // empty: server.pem and server.key in dir
  fs::path database() const { return dir / "kiln.db"; }
  // Written by `init --store URL`: the PostgreSQL store's URL (never a password) and password file.
  fs::path store_config() const { return dir / "store.toml"; }
  bool initialised() const { return fs::exists(database()) || fs::exists(store_config()); }
  fs::path images() const { return dir / "images"; }
  fs::path certificate() const { return tls_certificate.empty() ? dir / "server.pem" : tls_certificate; }
  fs::path key() const { return tls_key.empty() ? dir / "server.key" : tls_key; }
  // Secrets every instance on a copy of the directory shares (written by init, 0600).
  fs::path voucher_key() const { return dir / "voucher-key.pem"; }
  fs::path ticket_key() const { return dir / "ticket-key"; }
};

// The config file's keys: `kiln-service run` flags without their dashes (docs/service.md).
const std::vector<service::ConfigKey> config_keys = {
    {"dir", service::ConfigType::string},
    {"listen", service::ConfigType::string},
    {"agent-listen", service::ConfigType::string},
    {"tls-certificate", service::ConfigType::string},
    {"tls-key", service::ConfigType::string},
    {"threads", service::ConfigType::integer},
    {"max-threads", service::ConfigType::integer},
    {"handshake-timeout", service::ConfigType::number},
    {"header-timeout", service::ConfigType::number},
    {"body-timeout", service::ConfigType::number},
    {"max-connections-per-address", service::ConfigType::integer},
    {"session-cache", service::ConfigType::integer},
    {"check-in-after", service::ConfigType::integer},
    {"delivery-key", service::ConfigType::string},
    {"blob-dir", service::ConfigType::string},
    {"store", service::ConfigType::string},
    {"store-password-file", service::ConfigType::string},
};

// D/store.toml's keys.
const std::vector<service::ConfigKey> store_keys = {
    {"store", service::ConfigType::string},
    {"store-password-file", service::ConfigType::string},
};

// The config file fills the flags not given on the command line, through the flags' own checks, so a
// bad value stops the service here, at start, with the file, line and key named (exit 2).
void apply_config_file(CLI::App& command, const std::string& file) {
  for (auto& [key, value] : service::read_config_file(file, config_keys)) {
    CLI::Option* option = command.get_option_no_throw("--" + key);
    if (!option || option->count() > 0) continue;
    try {
      option->add_result(value.text);
      option->run_callback();
    } catch (const CLI::Error& e) {
      throw Error(ExitCode::usage, fmt::format("{}:{}: '{}': {}", file, value.line, key, e.what()));
    }
  }
}

// How each listener treats its connections (kiln-service run flags).
struct ListenerOptions {
  int threads = 8;         // kept ready
  int max_threads = 4096;  // one per connection being served, up to this many
  double handshake_timeout = 10, header_timeout = 10, body_timeout = 60;  // seconds, see ConnectionLimits
  int max_connections_per_address = 1000;
  int session_cache = 0;  // sessions the agent listener keeps for stateful tickets; 0: stateless tickets only

  service::ConnectionLimits limits() const {
    auto ms = [](double seconds) { return std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000)); };
    return {ms(handshake_timeout), ms(header_timeout), ms(body_timeout), max_connections_per_address};
  }
};

// A connection is a thread: room for thousands of descriptors, not the usual soft limit of 1024.
void raise_descriptor_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

// Where the directory's store is: D/store.toml's PostgreSQL URL, else the SQLite file D/kiln.db.
service::ServiceConfig service_config(const Paths& paths, int check_in_after = 60) {
  if (!paths.initialised())
    throw Error(ExitCode::not_found, "no kiln-service data in " + paths.dir.string(),
                "run 'kiln-service init --dir " + paths.dir.string() + "' first");
  service::ServiceConfig config{paths.database().string(), paths.images(), check_in_after, {}};
  if (fs::exists(paths.store_config())) {
    auto values = service::read_config_file(paths.store_config(), store_keys);
    auto url = values.find("store");
    if (url == values.end())
      throw Error(ExitCode::usage, paths.store_config().string() + " names no store (key 'store')");
    service::check_store_url(url->second.text);
    config.database = url->second.text;
    if (auto file = values.find("store-password-file"); file != values.end())
      config.store_password_file = file->second.text;
  }
  return config;
}

service::Service open_service(const Paths& paths) { return service::Service(service_config(paths)); }

void write_token(const fs::path& file, const std::string& token) {
  write_file_atomic(file, as_bytes(token + "\n"), 0600, AtomicFile::Overwrite::refuse);
}

// The store of `init`: the SQLite file D/kiln.db, or the PostgreSQL database of --store.
struct StoreChoice {
  std::string url;  // empty: SQLite
  std::string password_file;
};

int init(const Paths& paths, const std::string& tenant, const StoreChoice& store) {
  if (!store.url.empty()) {
    if (!service::is_postgresql_url(store.url))
      throw Error(ExitCode::usage, "--store wants a PostgreSQL connection URI (postgresql://...)",
                  "e.g. postgresql://kiln@db.example.com/kiln; without --store the store is SQLite in the --dir");
    service::check_store_url(store.url);
  }
  fs::create_directories(paths.dir);
  fs::permissions(paths.dir, fs::perms::owner_all);
  if (paths.initialised())
    throw Error(ExitCode::conflict, paths.dir.string() + " already holds a kiln-service", "pick another --dir");
  service::ServiceConfig config{paths.database().string(), paths.images(), 60, {}};
  if (!store.url.empty()) {
    config.database = store.url;
    config.store_password_file = store.password_file.empty() ? "" : fs::absolute(store.password_file).string();
  }
  // The store first: one that cannot be reached stops init before anything is written to the directory.
  service::Service svc(config);
  if (svc.find_tenant(tenant))
    throw Error(ExitCode::conflict, "the store already holds a tenant named " + tenant,
                "several instances share a store by sharing one initialised --dir (copy it); or pick --tenant");
  service::create_tls_material(paths.dir);
  // Written now, not at the first run: instances started on copies of this directory share them.
  service::VoucherKey::load_or_create(paths.voucher_key().string());
  service::TicketKeys::load_or_create(paths.ticket_key());
  auto tenant_id = svc.create_tenant(tenant);
  write_token(paths.dir / "admin.token", svc.create_token(tenant_id, service::Role::admin, "admin"));
  if (!store.url.empty()) {
    // TOML basic strings: the URL and path with their quotes and backslashes escaped.
    auto quoted = [](const std::string& text) { return nlohmann::json(text).dump(); };
    std::string toml = "# The store of this kiln-service directory (kiln-service init --store). The password is\n"
                       "# never kept here: KILN_STORE_PASSWORD, PGPASSWORD, PGPASSFILE or store-password-file.\n"
                       "store = " + quoted(store.url) + "\n";
    if (!config.store_password_file.empty())
      toml += "store-password-file = " + quoted(config.store_password_file) + "\n";
    write_file_atomic(paths.store_config(), as_bytes(toml), 0600, AtomicFile::Overwrite::refuse);
  }
  nlohmann::ordered_json out{{"dir", paths.dir.string()},
                             {"tenant", tenant},
                             {"store", store.url.empty() ? paths.database().string() : service::redact_store_url(store.url)},
                             {"ca_file", (paths.dir / "ca.pem").string()},
                             {"admin_token_file", (paths.dir / "admin.token").string()}};
  std::cout << out.dump(2) << "\n";
  return 0;
}

// The largest client certificate chain the agent listener accepts (docs/operations.md, --session-cache).
constexpr long max_agent_certificate_chain = 16 * 1024;
// The largest request body, an image chunk included (docs/openapi.yaml: 413 above it).
constexpr std::size_t max_request_body = std::size_t{64} << 20;

std::string der_of(X509* certificate) {
  int length = i2d_X509(certificate, nullptr);
  std::string der(static_cast<std::size_t>(std::max(length, 0)), '\0');
  auto* out = reinterpret_cast<unsigned char*>(der.data());
  if (length > 0) i2d_X509(certificate, &out);
  return der;
}

// A session ticket keeps the client's leaf certificate but not the chain it sent: a device certified through an
// intermediate CA would resume without its intermediate and no longer chain to its factory CA (401). So the
// chain (without the leaf) goes into the ticket's application data, DER certificates one after the other; on a
// resumed connection it comes back from there and is carried into the renewed ticket.
int put_chain_in_ticket(SSL* ssl, void* /*arg*/) {
  service::SessionCache::issue_stateful(ssl);  // when the listener keeps sessions itself (--session-cache)
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl);
  if (!chain || sk_X509_num(chain) == 0) return 1;  // resumed: the session keeps the data of its ticket
  std::string data;
  for (int i = 0; i < sk_X509_num(chain); ++i) data += der_of(sk_X509_value(chain, i));
  return SSL_SESSION_set1_ticket_appdata(SSL_get0_session(ssl), data.data(), data.size());
}

// The client's certificates, leaf first: its chain from the handshake, or on a resumed connection from the ticket.
std::vector<std::string> peer_certificates(SSL* ssl) {
  std::vector<std::string> out;
  X509* leaf = SSL_get1_peer_certificate(ssl);
  if (!leaf) return out;
  out.push_back(der_of(leaf));
  X509_free(leaf);
  // On a server the peer chain excludes the leaf.
  if (STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl); chain && sk_X509_num(chain) > 0) {
    for (int i = 0; i < sk_X509_num(chain); ++i) out.push_back(der_of(sk_X509_value(chain, i)));
    return out;
  }
  void* data = nullptr;
  std::size_t size = 0;
  if (!SSL_session_reused(ssl) || SSL_SESSION_get0_ticket_appdata(SSL_get0_session(ssl), &data, &size) != 1) return out;
  const auto* next = static_cast<const unsigned char*>(data);
  const auto* end = next + size;
  while (next < end) {
    X509* certificate = d2i_X509(nullptr, &next, static_cast<long>(end - next));
    if (!certificate) break;  // cannot happen for a ticket this instance sealed: stop at anything else
    out.push_back(der_of(certificate));
    X509_free(certificate);
  }
  return out;
}

service::Request to_request(const httplib::Request& in) {
  service::Request out;
  out.method = in.method;
  out.target = in.target;
  for (auto& [name, value] : in.headers) {
    std::string lower = name;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out.headers[lower] = value;
  }
  out.body = in.body;
  if (in.ssl) out.client_certificates = peer_certificates(const_cast<SSL*>(in.ssl));
  return out;
}

// Devices and stations present any certificate at the TLS layer; the service checks it against the
// registered factory CAs (and, for devices, the imported device key), which TLS cannot know about.
int accept_any_client_certificate(int /*preverified*/, X509_STORE_CTX* /*ctx*/) { return 1; }

std::unique_ptr<httplib::SSLServer> make_server(const Paths& paths, const ListenerOptions& options,
                                                std::shared_ptr<service::Service> svc, bool mutual_tls,
                                                service::ConnectionGuard& guard, int& listen_socket,
                                                service::ServerCredentials& credentials,
                                                const service::TicketKeys& tickets, service::SessionCache* sessions) {
  auto server = std::make_unique<httplib::SSLServer>(paths.certificate().c_str(), paths.key().c_str());
  if (!server->is_valid())
    throw Error(ExitCode::failure, "cannot load the server certificate/key " + paths.certificate().string() + ", " +
                                       paths.key().string());
  credentials.attach(server->ssl_context());
  // Without a session-id context, TLS session resumption fails when client certificates are requested.
  static const unsigned char session_context[] = "kiln-service";
  SSL_CTX_set_session_id_context(server->ssl_context(), session_context, sizeof session_context - 1);
  service::issue_tickets_sparingly(server->ssl_context(), put_chain_in_ticket);
  tickets.attach(server->ssl_context());
  if (sessions) sessions->attach(server->ssl_context());
  // A device's chain is a leaf and an intermediate or two (~2 KiB): a longer one is refused in the handshake, so
  // a stranger's certificates cannot make a kept session (--session-cache) or a ticket large.
  if (mutual_tls) SSL_CTX_set_max_cert_list(server->ssl_context(), max_agent_certificate_chain);
  // The agent listener requires a client certificate; the API listener asks for one and accepts a
  // handshake without: stations authenticate with a certificate, people and CI with a bearer token.
  SSL_CTX_set_verify(server->ssl_context(),
                     mutual_tls ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER,
                     accept_any_client_certificate);
  server->set_tcp_nodelay(true);
  server->set_keep_alive_max_count(100000);
  // A kept-alive connection holds a worker thread while it idles. Agents talk in bursts (check-in, manifest,
  // image ranges, statuses) separated by their check-in interval: release the thread soon after a burst.
  if (mutual_tls) server->set_keep_alive_timeout(1);
  server->set_payload_max_length(max_request_body);
  // Every connection gets a thread of its own (up to --max-threads), so slow or idle clients hold only
  // their own; the guard's deadlines bound how long any of them can.
  server->new_task_queue = [options] {
    return new service::ElasticTaskQueue({.min_threads = static_cast<std::size_t>(options.threads),
                                          .max_threads = static_cast<std::size_t>(options.max_threads)});
  };
  guard.attach(*server);
  // cpp-httplib listens with a backlog of 5: remember the socket to give it a deeper queue once bound.
  server->set_socket_options([&listen_socket](socket_t socket) {
    httplib::default_socket_options(socket);
    listen_socket = socket;
  });
  auto respond = [svc](const httplib::Request& req, httplib::Response& res, const service::Request& request) {
    auto reply = svc->handle(request);
    // The service answered Range itself (206 with Content-Range, or 416): cpp-httplib must not cut the answer
    // again. `req` is the server's own mutable request object, handed to handlers as const.
    const_cast<httplib::Request&>(req).ranges.clear();
    res.status = reply.status;
    for (auto& [name, value] : reply.headers) res.set_header(name, value);
    if (reply.stream && reply.stream->size() > 0) {
      // Content goes out as cpp-httplib pulls it, 64 KiB at a time, read from the files the answer holds open.
      auto body = std::make_shared<service::StreamedBody>(std::move(*reply.stream));
      res.set_content_provider(static_cast<std::size_t>(body->size()), reply.content_type,
                               [body](std::size_t offset, std::size_t length, httplib::DataSink& sink) {
                                 constexpr std::size_t piece = 64 * 1024;
                                 return body->send(static_cast<std::int64_t>(offset),
                                                   static_cast<std::int64_t>(std::min(length, piece)), sink.write);
                               });
      return;
    }
    // What set_content does, without copying the body (set_content takes it by const reference).
    res.body = std::move(reply.body);
    res.headers.erase("Content-Type");
    res.set_header("Content-Type", reply.content_type);
  };
  auto handler = [respond](const httplib::Request& req, httplib::Response& res) {
    // The build's version, for operators and monitoring: no token needed, nothing from the store.
    if (req.method == "GET" && req.path == "/v1/version") {
      res.set_content(nlohmann::json{{"service", "kiln-service"}, {"version", KILN_VERSION}}.dump() + "\n",
                      "application/json");
      return;
    }
    respond(req, res, to_request(req));
  };
  // PUT carries image chunks: the body is handed to the service as it arrives, never held whole. A body
  // over the request limit (cpp-httplib sets 413 and skips it) is answered 413, not as a cut-off body.
  auto streamed = [respond](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    auto request = to_request(req);
    bool too_large = false, body_read = false;
    request.read_body = [&](const service::ByteReceiver& receive) {
      body_read = true;
      bool read = reader(receive);
      too_large = !read && res.status == 413;
      return read;
    };
    respond(req, res, request);
    // A refused upload's body was never read: the connection cannot carry another request after it.
    if (!body_read) res.set_header("Connection", "close");
    if (!too_large) return;
    res.status = 413;
    res.set_content(nlohmann::json{{"error",
                                    {{"code", "payload_too_large"},
                                     {"message", fmt::format("a request body may be at most {} MiB: send the image in "
                                                             "smaller chunks (kiln image upload sends 1 MiB)",
                                                             max_request_body >> 20)}}}}
                            .dump(),
                    "application/json");
  };
  server->Get(".*", handler);
  server->Post(".*", handler);
  server->Put(".*", streamed);
  server->Patch(".*", handler);
  server->Delete(".*", handler);
  return server;
}

int bind_server(httplib::SSLServer& server, const std::string& listen, const int& listen_socket) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) throw Error(ExitCode::usage, "--listen wants HOST:PORT, e.g. 127.0.0.1:8443");
  std::string host = listen.substr(0, colon);
  int port = std::stoi(listen.substr(colon + 1));
  int bound = port == 0 ? server.bind_to_any_port(host) : (server.bind_to_port(host, port) ? port : -1);
  if (bound < 0) throw Error(ExitCode::failure, "cannot listen on " + listen, "is the port in use?");
  // Linux lets listen() be called again to resize the accept queue: a burst of connections is not dropped.
  if (listen_socket >= 0) ::listen(listen_socket, SOMAXCONN);
  return bound;
}

// Where image and manifest content lives: --blob-dir (one directory every instance of a PostgreSQL store
// mounts, docs/operations.md), else D/images. A --blob-dir must exist: a mount that is missing must not
// silently become an empty local directory only this instance sees.
fs::path blob_directory(const Paths& paths, const std::string& blob_dir) {
  if (blob_dir.empty()) return paths.images();
  std::error_code ec;
  if (!fs::is_directory(blob_dir, ec))
    throw Error(ExitCode::not_found, "--blob-dir " + blob_dir + " is not a directory",
                "mount the shared image directory there first (docs/operations.md, \"Several nodes\")");
  return fs::absolute(blob_dir);
}

int run(const Paths& paths, const std::string& listen, const std::string& agent_listen, const ListenerOptions& options,
        int check_in_after, const std::string& delivery_key, const std::string& blob_dir) {
  // Signals arrive on a dedicated thread so stop() runs outside a signal handler. Blocked before any
  // thread starts (the connection guards' watchdogs, the pools): a thread created earlier would take
  // SIGTERM with its default action and end the process without draining.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // Fails with a hint when the directory was never initialised, and when its store cannot be reached.
  auto config = service_config(paths, check_in_after);
  config.image_dir = blob_directory(paths, blob_dir);
  if (!delivery_key.empty()) config.delivery_key = service::load_delivery_key(delivery_key);
  config.voucher_key = service::VoucherKey::load_or_create(paths.voucher_key().string());
  auto tickets = service::TicketKeys::load_or_create(paths.ticket_key());
  auto log_mutex = std::make_shared<std::mutex>();
  config.log = [log_mutex](const std::string& line) {
    std::lock_guard lock(*log_mutex);
    std::cerr << line << std::endl;
  };
  auto svc = std::make_shared<service::Service>(config);
  std::cerr << "store: " << service::redact_store_url(config.database) << std::endl;
  std::cerr << "images: " << config.image_dir.string() << std::endl;
  raise_descriptor_limit();
  // Both listeners present this pair; SIGHUP reads the files again (certificate renewal).
  service::ServerCredentials credentials(paths.certificate(), paths.key());
  // The guards outlive the servers: OpenSSL reports each connection's end to its guard.
  service::ConnectionGuard api_guard(options.limits(), "api"), agent_guard(options.limits(), "agents");
  int api_socket = -1, agent_socket = -1;
  auto api = make_server(paths, options, svc, false, api_guard, api_socket, credentials, *tickets, nullptr);
  // Declared before the agent listener, so it outlives the listener's SSL_CTX, whose callbacks use it.
  std::unique_ptr<service::SessionCache> agent_sessions;
  if (options.session_cache > 0)
    agent_sessions = std::make_unique<service::SessionCache>(static_cast<std::size_t>(options.session_cache));
  std::unique_ptr<httplib::SSLServer> agents;
  if (!agent_listen.empty())
    agents = make_server(paths, options, svc, true, agent_guard, agent_socket, credentials, *tickets,
                         agent_sessions.get());
  std::string host = listen.substr(0, listen.rfind(':'));
  int port = bind_server(*api, listen, api_socket);
  int agent_port = agents ? bind_server(*agents, agent_listen, agent_socket) : 0;

  // SIGHUP: new handshakes get the certificate and key as they are now on disk; open connections keep
  // theirs. SIGTERM/SIGINT: stop accepting; requests in flight finish before the process exits.
  std::thread waiter([&api, &agents, &credentials, signals] {
    while (true) {
      int received = 0;
      sigwait(&signals, &received);
      if (received != SIGHUP) break;
      service::notify_systemd("RELOADING=1");
      try {
        credentials.reload();
        std::cerr << "reloaded the TLS certificate and key (" << credentials.certificate_file().string() << ")" << std::endl;
      } catch (const Error& e) {
        std::cerr << "kiln-service: error: " << e.what() << "; still using the previous certificate" << std::endl;
      }
      service::notify_systemd("READY=1");
    }
    service::notify_systemd("STOPPING=1");
    std::cerr << "stopping: finishing the requests in flight" << std::endl;
    api->stop();
    if (agents) agents->stop();
  });
  std::thread agent_thread;
  if (agents) {
    std::cerr << "agents: listening on https://" << agent_listen.substr(0, agent_listen.rfind(':')) << ":" << agent_port
              << " (mutual TLS)" << std::endl;
    agent_thread = std::thread([&agents] { agents->listen_after_bind(); });
  }
  std::cerr << "listening on https://" << host << ":" << port << std::endl;
  service::notify_systemd("READY=1");
  api->listen_after_bind();
  if (agent_thread.joinable()) agent_thread.join();
  waiter.join();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("kiln-service: the reference kiln security service (HTTPS JSON API, SQLite or PostgreSQL store)", "kiln-service");
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(KILN_VERSION));
  Paths paths;
  std::string tenant = "default", listen = "127.0.0.1:8443", agent_listen, role, name, token_file;
  ListenerOptions listener;
  int check_in_after = 60;
  std::string delivery_key, blob_dir;

  std::string config_file;
  bool if_missing = false;
  auto* init_cmd = app.add_subcommand("init", "Create TLS material, the database, a tenant and D/admin.token (0600)");
  init_cmd->add_option("--dir", paths.dir, "Data directory (or 'dir' in --config)");
  init_cmd->add_option("--config", config_file, "Config file (TOML): its 'dir' names the data directory")
      ->type_name("FILE");
  init_cmd->add_option("--tenant", tenant, "Name of the first tenant");
  init_cmd->add_flag("--if-missing", if_missing, "Do nothing when the data directory already holds a service");
  StoreChoice store;
  init_cmd
      ->add_option("--store", store.url,
                   "PostgreSQL store: a libpq connection URI (postgresql://USER@HOST/DB), kept in D/store.toml; "
                   "no password in it (default: SQLite, D/kiln.db)")
      ->type_name("URL");
  init_cmd
      ->add_option("--store-password-file", store.password_file,
                   "A 0600 file holding the PostgreSQL password (else KILN_STORE_PASSWORD, PGPASSWORD or PGPASSFILE)")
      ->type_name("FILE");

  auto* run_cmd = app.add_subcommand(
      "run", "Serve the API over HTTPS until SIGTERM/SIGINT (requests in flight finish); SIGHUP reloads the TLS certificate");
  run_cmd->add_option("--dir", paths.dir, "Data directory (or 'dir' in --config)");
  run_cmd
      ->add_option("--config", config_file,
                   "Config file (TOML): any run flag without its dashes, e.g. listen = \"127.0.0.1:8443\"; flags win")
      ->type_name("FILE");
  run_cmd->add_option("--tls-certificate", paths.tls_certificate, "Server certificate, PEM (default D/server.pem)")
      ->type_name("FILE");
  run_cmd->add_option("--tls-key", paths.tls_key, "Its unencrypted PEM key (default D/server.key)")->type_name("FILE");
  run_cmd->add_option("--listen", listen, "HOST:PORT (port 0 picks a free port and prints it)");
  run_cmd->add_option("--agent-listen", agent_listen, "HOST:PORT for device agents (mutual TLS); port 0 picks one");
  run_cmd->add_option("--threads", listener.threads, "Worker threads each listener keeps ready (default 8)")
      ->check(CLI::Range(1, 256));
  run_cmd
      ->add_option("--max-threads", listener.max_threads,
                   "Most connections each listener serves at once, a thread each (default 4096); more wait")
      ->check(CLI::Range(1, 65536));
  run_cmd
      ->add_option("--handshake-timeout", listener.handshake_timeout,
                   "Seconds a client has for the TLS handshake (default 10)")
      ->check(CLI::Range(0.1, 3600.0));
  run_cmd
      ->add_option("--header-timeout", listener.header_timeout,
                   "Seconds for a request's line and headers, from the handshake or the previous response (default 10)")
      ->check(CLI::Range(0.1, 3600.0));
  run_cmd
      ->add_option("--body-timeout", listener.body_timeout,
                   "Seconds for a request's body and its response, from the end of its headers (default 60)")
      ->check(CLI::Range(0.1, 86400.0));
  run_cmd
      ->add_option("--max-connections-per-address", listener.max_connections_per_address,
                   "Connections one IP address may hold open on each listener (default 1000; 0: no limit)")
      ->check(CLI::Range(0, 1000000));
  run_cmd
      ->add_option("--session-cache", listener.session_cache,
                   "TLS sessions the agent listener keeps in memory to resume devices with stateful tickets, "
                   "cheaper than stateless ones but lost on restart and not shared between instances "
                   "(default 0: stateless tickets only; needs --agent-listen; docs/operations.md)")
      ->check(CLI::Range(0, 100000000));
  run_cmd->add_option("--check-in-after", check_in_after, "Seconds agents are told to wait between check-ins")
      ->check(CLI::Range(1, 86400));
  run_cmd
      ->add_option("--delivery-key", delivery_key,
                   "The service's image-encryption private key (PEM file, mode 0600, or a pkcs11: URI with module-path= "
                   "and pin-source=): releases encrypted for it go to each device with the content key wrapped to "
                   "the device's own key (docs/encrypted-delivery.md)")
      ->type_name("KEYREF");
  run_cmd
      ->add_option("--blob-dir", blob_dir,
                   "Directory of image and manifest content (default D/images); instances sharing a PostgreSQL "
                   "store must all name one shared directory here (docs/operations.md)")
      ->type_name("DIR");

  auto* tenant_cmd = app.add_subcommand("tenant", "Manage tenants");
  tenant_cmd->require_subcommand(1);
  auto* tenant_create = tenant_cmd->add_subcommand("create", "Create a tenant and write its admin token 0600 to a file");
  tenant_create->add_option("--dir", paths.dir, "Data directory")->required();
  tenant_create->add_option("--name", tenant, "Tenant name")->required();
  tenant_create->add_option("--token-file", token_file, "Where to write the tenant's admin token")->required();

  auto* token_cmd = app.add_subcommand("token", "Manage API tokens");
  token_cmd->require_subcommand(1);
  auto* token_create = token_cmd->add_subcommand("create", "Create a token; prints it once (or writes it 0600 with --token-file)");
  token_create->add_option("--dir", paths.dir, "Data directory")->required();
  token_create->add_option("--role", role, "admin, operator, factory or reader")
      ->required()
      ->check(CLI::IsMember({"admin", "operator", "factory", "reader"}));
  token_create->add_option("--tenant", tenant, "Tenant name");
  token_create->add_option("--name", name, "A label for the token");
  token_create->add_option("--token-file", token_file, "Write the token here (0600) instead of stdout");

  // Not an option: the man page is written from the tree above (scripts/generate.sh, the packages).
  if (argc == 2 && std::string_view(argv[1]) == "--man-page") {
    std::cout << service::manual_page(app);
    return 0;
  }
  try {
    app.parse(argc, argv);
    for (auto* command : {init_cmd, run_cmd})
      if (*command && !config_file.empty()) apply_config_file(*command, config_file);
    if ((*init_cmd || *run_cmd) && paths.dir.empty())
      throw Error(ExitCode::usage, "no data directory", "give --dir DIR, or 'dir' in the --config file");
    // The cache serves the agent listener only: without one, N would be ignored, and the operator left believing
    // devices resume statefully. An error, as for any other bad setting in the file: it is checked at start.
    if (*run_cmd && listener.session_cache > 0 && agent_listen.empty())
      throw Error(ExitCode::usage, "--session-cache keeps the agent listener's sessions, and there is no agent listener",
                  "give --agent-listen HOST:PORT (or 'agent-listen' in the --config file), or leave --session-cache out");
    if (*init_cmd && if_missing && paths.initialised()) return 0;
    if (*init_cmd) return init(paths, tenant, store);
    if (*run_cmd) return run(paths, listen, agent_listen, listener, check_in_after, delivery_key, blob_dir);
    auto svc = open_service(paths);
    auto tenant_id = svc.find_tenant(tenant);
    if (*tenant_create) {
      if (tenant_id) throw Error(ExitCode::conflict, "tenant " + tenant + " already exists");
      write_token(token_file, svc.create_token(svc.create_tenant(tenant), service::Role::admin, "admin"));
      return 0;
    }
    if (!tenant_id) throw Error(ExitCode::not_found, "tenant " + tenant + " does not exist");
    auto token = svc.create_token(*tenant_id, *service::parse_role(role), name.empty() ? role : name);
    if (token_file.empty()) std::cout << token << "\n";
    else write_token(token_file, token);
    return 0;
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const Error& e) {
    std::cerr << "kiln-service: error: " << e.what() << "\n";
    if (!e.hint().empty()) std::cerr << "  hint: " << e.hint() << "\n";
    return static_cast<int>(e.code());
  } catch (const std::exception& e) {
    std::cerr << "kiln-service: error: " << e.what() << "\n";
    return 1;
  }
}
