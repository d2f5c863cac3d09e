// kiln board: list, inspect, update and advance boards over USB, serial or the emulator socket.
#include <chrono>

#include <CLI/CLI.hpp>

#include "cli/board_views.hpp"
#include "cli/context.hpp"
#include "cli/progress.hpp"
#include "commands/board_session.hpp"
#include "commands/commands.hpp"
#include "core/error.hpp"
#include "transport/board_address.hpp"
#include "transport/board_api.hpp"
#include "transport/provisioning_group.hpp"

namespace kiln::commands {
namespace {

struct BoardArgs {
  std::optional<std::string> board;
  int timeout_ms = 5000;
  std::size_t window = 8;
};

void add_board_options(CLI::App* command, BoardArgs& args) {
  command->add_option("-b,--board", args.board, "usb:BUS-PORT[.PORT], serial:/dev/tty..., emu:/path.sock or a UID");
  command->add_option("--timeout", args.timeout_ms, "Milliseconds to wait for each answer")->check(CLI::Range(10, 600000));
}

SmpClient connect(const cli::Context& ctx, const BoardArgs& args) {
  return open_board(ctx, args.board, std::chrono::milliseconds(args.timeout_ms), args.window);
}

}  // namespace

void add_board(CLI::App& app, cli::Context& ctx) {
  auto* board = app.add_subcommand("board", "Talk to boards over USB, serial or the emulator (MCUmgr SMP)");
  board->require_subcommand(1);

  auto list_args = std::make_shared<BoardArgs>();
  auto* list = board->add_subcommand("list", "Attached boards: address, UID, manufacturing state, firmware");
  list->add_option("--timeout", list_args->timeout_ms, "Milliseconds to wait for each board")->check(CLI::Range(10, 600000));
  list->callback([&ctx, list_args] {
    cli::render_boards(ctx, survey_boards(board_discovery(ctx), std::chrono::milliseconds(list_args->timeout_ms)));
  });

  auto info_args = std::make_shared<BoardArgs>();
  auto* info = board->add_subcommand("info", "Identity: UID, manufacturing state, firmware, attestation");
  add_board_options(info, *info_args);
  info->callback([&ctx, info_args] {
    auto client = connect(ctx, *info_args);
    ctx.render(cli::identity_json(client.board(), read_identity(client)));
  });

  auto echo_args = std::make_shared<BoardArgs>();
  auto echo_text = std::make_shared<std::string>();
  auto* echo_cmd = board->add_subcommand("echo", "Send text and print the board's echo (link check)");
  echo_cmd->add_option("TEXT", *echo_text, "Text to echo")->required();
  add_board_options(echo_cmd, *echo_args);
  echo_cmd->callback([&ctx, echo_args, echo_text] {
    auto client = connect(ctx, *echo_args);
    ctx.render({{"address", client.board()}, {"echo", echo(client, *echo_text)}});
  });

  auto images_args = std::make_shared<BoardArgs>();
  auto* images = board->add_subcommand("images", "Image slots: versions, hashes, flags");
  add_board_options(images, *images_args);
  images->callback([&ctx, images_args] {
    auto client = connect(ctx, *images_args);
    cli::render_slots(ctx, read_image_state(client));
  });

  struct UploadArgs {
    BoardArgs board;
    std::string file;
    InstallOptions install;
  };
  auto upload_args = std::make_shared<UploadArgs>();
  auto* upload = board->add_subcommand("upload", "Upload a signed MCUboot image to the secondary slot and mark it");
  upload->add_option("FILE", upload_args->file, "Signed MCUboot image")->required()->check(CLI::ExistingFile);
  upload->add_option("--slot", upload_args->install.upload.image, "MCUboot image number (multi-image boards)");
  upload->add_flag("--confirm", upload_args->install.confirm, "Make it permanent (default: test once, revert unless confirmed)");
  upload->add_flag("--reset", upload_args->install.reset, "Reset the board afterwards to boot the image");
  upload->add_option("--window", upload_args->board.window, "Packets in flight (1 = stop-and-wait)")->check(CLI::Range(1, 64));
  upload->add_option("--chunk-size", upload_args->install.upload.chunk_size, "Data bytes per packet (default: board buffer)");
  add_board_options(upload, upload_args->board);
  upload->callback([&ctx, upload_args] {
    auto client = connect(ctx, upload_args->board);
    auto result = install_image(client, upload_args->file, upload_args->install, cli::progress_callback(ctx, "upload"));
    cli::render_install(ctx, client.board(), upload_args->file, result, upload_args->install.confirm);
  });

  auto confirm_args = std::make_shared<BoardArgs>();
  auto* confirm = board->add_subcommand(
      "confirm", "Confirm the running image (after a test boot): it stays, and slot 1 is free for the next upload");
  add_board_options(confirm, *confirm_args);
  confirm->callback([&ctx, confirm_args] {
    auto client = connect(ctx, *confirm_args);
    cli::render_slots(ctx, write_image_state(client, {}, true));
  });

  auto reset_args = std::make_shared<BoardArgs>();
  auto* reset = board->add_subcommand("reset", "Reboot the board (MCUboot swaps in a pending image)");
  add_board_options(reset, *reset_args);
  reset->callback([&ctx, reset_args] {
    auto client = connect(ctx, *reset_args);
    reset_board(client);
    ctx.render({{"address", client.board()}, {"reset", true}});
  });

  struct StateArgs {
    BoardArgs board;
    std::string set;
    bool dry_run = false;
    bool yes = false;
  };
  auto state_args = std::make_shared<StateArgs>();
  auto* state = board->add_subcommand("state", "Show or advance the manufacturing state (one way)");
  state->add_option("--set", state_args->set, "module-complete or device-complete (irreversible)")
      ->check(CLI::IsMember({"module-complete", "device-complete"}));
  auto* dry = state->add_flag("--dry-run", state_args->dry_run, "Check the transition and its preconditions only");
  state->add_flag("-y,--yes", state_args->yes, "Confirm the irreversible change")->excludes(dry);
  add_board_options(state, state_args->board);
  state->callback([&ctx, state_args] {
    if (state_args->set.empty() && (state_args->dry_run || state_args->yes))
      throw Error(ExitCode::usage, "--dry-run and --yes need --set");
    auto client = connect(ctx, state_args->board);
    if (state_args->set.empty()) return ctx.render(cli::board_state_json(client.board(), read_identity(client)));
    auto next = parse_manufacturing_state(state_args->set);
    if (!state_args->dry_run && !state_args->yes) cli::confirm_state_change(ctx, client.board(), state_args->set);
    auto reached = set_manufacturing_state(client, next, state_args->dry_run);
    ctx.render(cli::state_change_json(client.board(), reached, state_args->dry_run));
  });
}

}  // namespace kiln::commands
