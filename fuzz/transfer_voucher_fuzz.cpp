// libFuzzer target: the device-transfer voucher parser (kiln device transfer accept sends the file as is;
// the service parses it before any lookup). It returns a voucher whose fields hold what the parser promises,
// or throws kiln::Error(verification_failed); it never crashes, and what it accepts survives a round trip.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>

#include "core/device_uid.hpp"
#include "core/error.hpp"
#include "service/transfer_voucher.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  kiln::service::TransferVoucher voucher;
  try {
    voucher = kiln::service::parse_transfer_voucher(text);
  } catch (const kiln::Error& e) {
    if (e.code() != kiln::ExitCode::verification_failed) __builtin_trap();
    return 0;
  }
  if (voucher.devices.empty() || voucher.devices.size() > kiln::service::max_voucher_devices) __builtin_trap();
  std::set<std::string> unique(voucher.devices.begin(), voucher.devices.end());
  if (unique.size() != voucher.devices.size()) __builtin_trap();
  for (const auto& id : voucher.devices)
    if (!kiln::is_device_uid(id)) __builtin_trap();
  if (voucher.signature.size() != 64 || voucher.expires_at <= voucher.issued_at) __builtin_trap();
  // What the parser accepts, written back, parses to the same signed bytes.
  auto again = kiln::service::parse_transfer_voucher(kiln::service::voucher_json(voucher).dump());
  if (kiln::service::voucher_signed_bytes(again) != kiln::service::voucher_signed_bytes(voucher)) __builtin_trap();
  return 0;
}
