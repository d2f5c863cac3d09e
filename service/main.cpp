// kiln-service: init (TLS material, database, tenant, admin token), run (HTTPS API), tenant/token admin.
#include <signal.h>

#include <filesystem>
#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <openssl/ssl.h>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "service/api.hpp"
#include "service/tls_material.hpp"

namespace fs = std::filesystem;
using namespace kiln;

namespace {

struct Paths {
  fs::path dir;
  fs::path database() const { return dir / "kiln.db"; }
  fs::path images() const { return dir / "images"; }
};

service::Service open_service(const Paths& paths) {
  if (!fs::exists(paths.database()))
    throw Error(ExitCode::not_found, "no kiln-service data in " + paths.dir.string(),
                "run 'kiln-service init --dir " + paths.dir.string() + "' first");
  return service::Service({paths.database().string(), paths.images()});
}

void write_token(const fs::path& file, const std::string& token) {
  write_file_atomic(file, as_bytes(token + "\n"), 0600, AtomicFile::Overwrite::refuse);
}

int init(const Paths& paths, const std::string& tenant) {
  fs::create_directories(paths.dir);
  fs::permissions(paths.dir, fs::perms::owner_all);
  if (fs::exists(paths.database()))
    throw Error(ExitCode::conflict, paths.dir.string() + " already holds a kiln-service", "pick another --dir");
  service::create_tls_material(paths.dir);
  service::Service svc({paths.database().string(), paths.images()});
  auto tenant_id = svc.create_tenant(tenant);
  write_token(paths.dir / "admin.token", svc.create_token(tenant_id, service::Role::admin, "admin"));
  nlohmann::ordered_json out{{"dir", paths.dir.string()},
                             {"tenant", tenant},
                             {"ca_file", (paths.dir / "ca.pem").string()},
                             {"admin_token_file", (paths.dir / "admin.token").string()}};
  std::cout << out.dump(2) << "\n";
  return 0;
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
  return out;
}

int run(const Paths& paths, const std::string& listen, int threads) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) throw Error(ExitCode::usage, "--listen wants HOST:PORT, e.g. 127.0.0.1:8443");
  std::string host = listen.substr(0, colon);
  int port = std::stoi(listen.substr(colon + 1));
  auto svc = std::make_shared<service::Service>(service::ServiceConfig{paths.database().string(), paths.images()});
  if (!fs::exists(paths.database())) open_service(paths);

  httplib::SSLServer server((paths.dir / "server.pem").c_str(), (paths.dir / "server.key").c_str());
  if (!server.is_valid())
    throw Error(ExitCode::failure, "cannot load the server certificate/key from " + paths.dir.string());
  static const unsigned char session_context[] = "kiln-service";
  SSL_CTX_set_session_id_context(server.ssl_context(), session_context, sizeof session_context - 1);
  server.set_tcp_nodelay(true);
  server.set_keep_alive_max_count(100000);
  server.set_payload_max_length(std::size_t{64} << 20);
  server.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<std::size_t>(threads)); };
  auto handler = [svc](const httplib::Request& req, httplib::Response& res) {
    auto reply = svc->handle(to_request(req));
    res.status = reply.status;
    for (auto& [name, value] : reply.headers) res.set_header(name, value);
    res.set_content(std::move(reply.body), reply.content_type.c_str());
  };
  server.Get(".*", handler);
  server.Post(".*", handler);
  server.Put(".*", handler);
  server.Patch(".*", handler);
  server.Delete(".*", handler);

  int bound = port == 0 ? server.bind_to_any_port(host) : (server.bind_to_port(host, port) ? port : -1);
  if (bound < 0) throw Error(ExitCode::failure, "cannot listen on " + listen, "is the port in use?");

  // Signals arrive on a dedicated thread so stop() runs outside a signal handler.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::thread waiter([&server, signals] {
    int received = 0;
    sigwait(&signals, &received);
    server.stop();
  });
  std::cerr << "listening on https://" << host << ":" << bound << std::endl;
  server.listen_after_bind();
  if (waiter.joinable()) {
    pthread_kill(waiter.native_handle(), SIGTERM);
    waiter.join();
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("kiln-service: the reference kiln security service (HTTPS JSON API, SQLite store)", "kiln-service");
  app.require_subcommand(1);
  Paths paths;
  std::string tenant = "default", listen = "127.0.0.1:8443", role, name, token_file;
  int threads = 8;

  auto* init_cmd = app.add_subcommand("init", "Create TLS material, the database, a tenant and D/admin.token (0600)");
  init_cmd->add_option("--dir", paths.dir, "Data directory")->required();
  init_cmd->add_option("--tenant", tenant, "Name of the first tenant");

  auto* run_cmd = app.add_subcommand("run", "Serve the API over HTTPS until SIGTERM/SIGINT");
  run_cmd->add_option("--dir", paths.dir, "Data directory")->required();
  run_cmd->add_option("--listen", listen, "HOST:PORT (port 0 picks a free port and prints it)");
  run_cmd->add_option("--threads", threads, "Worker threads")->check(CLI::Range(1, 256));

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

  try {
    app.parse(argc, argv);
    if (*init_cmd) return init(paths, tenant);
    if (*run_cmd) return run(paths, listen, threads);
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
