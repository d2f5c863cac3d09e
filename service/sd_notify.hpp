// systemd's readiness protocol without libsystemd: a datagram to $NOTIFY_SOCKET (see sd_notify(3)).
#pragma once

#include <string_view>

namespace kiln::service {

// Sends a state such as "READY=1", "RELOADING=1" or "STOPPING=1" (newline-separated assignments) to the
// AF_UNIX datagram socket named by $NOTIFY_SOCKET: a path, or "@name" for an abstract socket. Returns
// false when the variable is unset (not started by systemd with Type=notify) or the send fails; the
// service runs the same either way.
bool notify_systemd(std::string_view state);

}  // namespace kiln::service
