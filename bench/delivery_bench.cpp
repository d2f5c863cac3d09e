// Benchmark of confidential delivery per device (docs/encrypted-delivery.md): what kiln-service spends on one
// device's copy of an encrypted release, with the library functions it runs.
//   wraps/s:   open the release's content key with the delivery key, wrap it to a device key (rewrapped_area)
//   images/s:  the same plus the SHA-256 of the device's whole image (what the service does once per device
//              and release; later check-ins and downloads reuse it)
// Usage: kiln_bench_delivery RELEASE DELIVERY_KEY.pem DEVICE_PUB.pem... [--seconds S]
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "signing/image_delivery.hpp"
#include "signing/signer.hpp"

using namespace kiln;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s RELEASE DELIVERY_KEY.pem DEVICE_PUB.pem... [--seconds S]\n", argv[0]);
    return 2;
  }
  double seconds = 2.0;
  std::vector<std::string> devices;
  for (int i = 3; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--seconds" && i + 1 < argc) seconds = std::stod(argv[++i]);
    else devices.push_back(arg);
  }
  try {
    const std::string release = argv[1];
    auto opener = mcuboot::load_content_key_opener(argv[2]);
    auto at = mcuboot::locate_key_tlv(release);
    for (const auto& device : devices) {
      auto key = mcuboot::load_encryption_key(device);
      auto run = [&](bool whole_image) {
        long count = 0;
        auto start = Clock::now();
        auto until = start + std::chrono::duration<double>(seconds);
        while (Clock::now() < until) {
          Bytes area = mcuboot::rewrapped_area(at, *opener, key);
          if (whole_image) {
            Hasher hasher(HashAlg::sha256);
            mcuboot::stream_with_area(release, at, area, [&](ByteView piece) { hasher.update(piece); });
            (void)hasher.finish();
          }
          ++count;
        }
        return static_cast<double>(count) / std::chrono::duration<double>(Clock::now() - start).count();
      };
      double wraps = run(false);
      double images = run(true);
      std::printf("%s -> %s: %.0f wraps/s (content key opened and wrapped), %.0f device images/s (wrap + SHA-256 of "
                  "%llu bytes)\n",
                  std::string(mcuboot::encryption_key_kind_name(opener->kind())).c_str(),
                  std::string(mcuboot::encryption_key_kind_name(key.kind)).c_str(), wraps, images,
                  static_cast<unsigned long long>(at.file_size));
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "kiln_bench_delivery: %s\n", e.what());
    return static_cast<int>(e.code());
  }
  return 0;
}
