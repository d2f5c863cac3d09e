// TLS material for kiln-service: a private CA and a server certificate for 127.0.0.1 and localhost.
#pragma once

#include <filesystem>

namespace kiln::service {

// Writes ca.pem, ca.key (0600), server.pem, server.key (0600) into dir.
void create_tls_material(const std::filesystem::path& dir);

}  // namespace kiln::service
