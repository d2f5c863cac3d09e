// kiln device claim-challenge and claim: bind devices to your tenant, each proving it holds its device key
// (signed on its board, by a key file, or offline with --nonce and --signature-file).
#include <CLI/CLI.hpp>

#include "cli/context.hpp"
#include "commands/board_session.hpp"
#include "commands/commands.hpp"
#include "commands/service_session.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/key_ref.hpp"
#include "transport/device_claims.hpp"
#include "transport/provisioning_group.hpp"

namespace kiln::commands {
namespace {

struct ClaimArgs {
  std::string id;
  std::vector<std::string> ids;
  std::string key, board, nonce, signature_file, from_file;
};

}  // namespace

void add_device_claim(CLI::App* device, cli::Context& ctx) {
  auto a = std::make_shared<ClaimArgs>();
  auto* challenge = device->add_subcommand("claim-challenge", "Ask the service for a claim challenge (two-step claim)");
  challenge->add_option("--id", a->id, "Device UID")->required();
  challenge->callback([&ctx, a] {
    auto api = connect(ctx);
    ctx.render(transport::claim_challenge(api, a->id));
  });

  auto* claim = device->add_subcommand("claim", "Bind devices to your tenant: each proves it holds its device key");
  claim->add_option("--id", a->ids, "Device UID (repeat for several)");
  claim->add_option("--from-file", a->from_file,
                    "UIDs, one per line ('#' comments), or JSON lines with uid/id (ledger export, device list -o jsonl)")
      ->type_name("FILE")
      ->check(CLI::ExistingFile);
  auto* key = claim->add_option("--key", a->key,
                                "The device's KEYREF (emulated/development devices); {uid} in it names each device's key");
  auto* board = claim->add_option("--board,-b", a->board,
                                  "Ask this board to sign the challenge (one device); without --board and --key each "
                                  "device's board is found by its UID");
  auto* nonce = claim->add_option("--nonce", a->nonce, "Nonce from 'kiln device claim-challenge' (one device)");
  claim->add_option("--signature-file", a->signature_file, "The device's signature over the challenge message (DER)")
      ->needs(nonce)
      ->check(CLI::ExistingFile);
  nonce->needs("--signature-file");
  key->excludes(nonce);
  board->excludes(key)->excludes(nonce);
  claim->callback([&ctx, a] {
    auto ids = transport::named_device_ids(a->ids, a->from_file, "name them with --id UID (repeatable) or --from-file FILE");
    bool several = ids.size() > 1 || !a->from_file.empty();
    if (several && (!a->board.empty() || !a->nonce.empty()))
      throw Error(ExitCode::usage, "--board and --nonce claim one device",
                  "for several devices, each board is found by its UID (omit --board), or use --key with {uid}");
    auto api = connect(ctx);
    // The device key never leaves the board's secure element: the board signs over the link.
    auto board_signs = [&](const std::string& address, const std::string& message) {
      auto client = open_board(ctx, address, std::chrono::seconds(10));
      return sign_challenge(client, as_bytes(message));
    };
    auto key_signs = [&](const std::string& id, const std::string& message) {
      return transport::sign_message(*open_signer(transport::device_keyref(a->key, id), ctx.key_options()), message);
    };
    if (!several) {
      const auto& id = ids.front();
      if (!a->nonce.empty()) {
        ctx.render(transport::claim_with_signature(api, id, a->nonce, read_file(a->signature_file)));
      } else if (!a->key.empty()) {
        ctx.render(transport::claim_device(api, id, [&](const std::string& m) { return key_signs(id, m); }));
      } else {
        auto address = a->board.empty() ? id : a->board;
        ctx.render(transport::claim_device(api, id, [&](const std::string& m) { return board_signs(address, m); }));
      }
      return;
    }
    auto rows = transport::claim_devices(api, ids, [&](const std::string& id, const std::string& message) {
      return a->key.empty() ? board_signs(id, message) : key_signs(id, message);
    });
    cli::Json table = cli::Json::array();
    for (const auto& row : rows) table.push_back({{"uid", row["uid"]}, {"result", row["result"]}, {"error", row["error"]}});
    ctx.render(table);
    transport::require_all_claimed(rows);
  });
}

}  // namespace kiln::commands
