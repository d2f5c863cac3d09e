// The views `kiln board` renders: the boards attached, a board's identity, its image slots, an upload's result
// and its manufacturing state; and the question asked before that state is advanced (it is irreversible).
#pragma once

#include <string>

#include "cli/context.hpp"
#include "cli/output.hpp"
#include "transport/board_address.hpp"
#include "transport/board_api.hpp"
#include "transport/provisioning_group.hpp"

namespace kiln::cli {

// "sha256:<hex>" of DER bytes (a certificate or a public key).
std::string fingerprint(ByteView der);
Json slot_json(const ImageSlot& slot);
Json identity_json(const std::string& address, const BoardIdentity& identity);
Json install_result_json(const std::string& address, const std::string& file, const InstallResult& result,
                         bool confirm);

// `board list`: a record per board; one that did not answer shows its error as its status.
void render_boards(const Context& ctx, const std::vector<BoardSummary>& boards);
// A record per image slot.
void render_slots(const Context& ctx, const std::vector<ImageSlot>& slots);
// `board upload`: the result, after saying on stderr when the board already ran the image (nothing uploaded).
void render_install(const Context& ctx, const std::string& address, const std::string& file,
                    const InstallResult& result, bool confirm);
// `board state` without --set: the board's manufacturing state.
Json board_state_json(const std::string& address, const BoardIdentity& identity);
// `board state --set`: the state reached, or with dry_run the state it would become.
Json state_change_json(const std::string& address, ManufacturingState reached, bool dry_run);
// Before advancing `address` to `state` without --yes: asks on a terminal (an answer other than yes: exit 130, nothing
// changed); refuses with exit 7 when stdin is not a terminal, saying to check with --dry-run and repeat with --yes.
void confirm_state_change(const Context& ctx, const std::string& address, const std::string& state);

}  // namespace kiln::cli
