// A secret the service keeps in its directory (the voucher key, the session-ticket secret): created 0600 on
// first use, refused when anyone but its owner may read it.
#pragma once

#include <filesystem>
#include <functional>
#include <string_view>

#include "core/bytes.hpp"

namespace kiln::service {

// The file's bytes. An absent file is first written (0600) with `create()`; when another instance creates it at
// the same moment, theirs is used. Throws Error(authentication) when group or others have any access to it,
// naming it as `what` ("the voucher key").
Bytes load_or_create_secret(const std::filesystem::path& path, std::string_view what, const std::function<Bytes()>& create);

}  // namespace kiln::service
