// What a station key signs over its ledger (docs/ledger-bundle.md): the head after every append and, at
// export, the chain of row hashes. Shared by the station (kiln) and the service that imports bundles.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/bytes.hpp"
#include "signing/signer.hpp"

namespace kiln {

// "kiln ledger head v1\n<ledger_id>\n<rows>\n<hash of row `rows`>"
std::string ledger_head_message(const std::string& ledger_id, std::int64_t rows, const std::string& hash);
// "kiln ledger chain v1\n<ledger_id>\n<rows>\n<hash of row 1>\n…\n<hash of row `rows`>"
std::string ledger_chain_message(const std::string& ledger_id, const std::vector<std::string>& hashes);

// Ed25519 signs the message itself; ECDSA signs its SHA-256 digest.
Bytes sign_station_message(const Signer& signer, ByteView message);
// False for a bad signature and for a key that cannot verify (never throws).
bool verify_station_message(ByteView public_key_der, ByteView message, ByteView signature);

}  // namespace kiln
