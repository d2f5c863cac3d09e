// Station-key signatures over the ledger head and chain: the messages and the one signing rule.
#include "signing/ledger_signature.hpp"

#include <fmt/format.h>

#include "core/error.hpp"
#include "signing/message_signature.hpp"

namespace kiln {

std::string ledger_head_message(const std::string& ledger_id, std::int64_t rows, const std::string& hash) {
  return fmt::format("kiln ledger head v1\n{}\n{}\n{}", ledger_id, rows, hash);
}

std::string ledger_chain_message(const std::string& ledger_id, const std::vector<std::string>& hashes) {
  std::string message = fmt::format("kiln ledger chain v1\n{}\n{}", ledger_id, hashes.size());
  message.reserve(message.size() + hashes.size() * 65);
  for (const auto& hash : hashes) {
    message += '\n';
    message += hash;
  }
  return message;
}

Bytes sign_station_message(const Signer& signer, ByteView message) {
  return sign_message(signer, message, HashAlg::sha256);
}

bool verify_station_message(ByteView public_key_der, ByteView message, ByteView signature) {
  return verify_message(public_key_der, message, HashAlg::sha256, signature);
}

}  // namespace kiln
