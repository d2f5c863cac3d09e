// Test fixture: a station (CA key and certificate, boot key, profile) and emulated boards served
// in-process, so workflow tests run real crypto, real SQLite and the real SMP client.
#pragma once

#include <doctest/doctest.h>

#include <memory>
#include <vector>

#include "core/files.hpp"
#include "emulator/board.hpp"
#include "emulator/server.hpp"
#include "provisioning/profile.hpp"
#include "provisioning/workflow.hpp"
#include "signing/file_key.hpp"
#include "signing/key_info.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

namespace kiln::test {

// A CA key (P-256 PEM) and a self-signed CA certificate made with the openssl CLI.
inline void make_ca(const TempDir& dir, const std::string& key_name, const std::string& cert_name,
                    const std::string& subject = "/CN=Test Station CA/O=kiln tests") {
  write_file_atomic(dir.file(key_name), as_bytes(generate_private_key_pem(KeyType::ecdsa_p256, std::nullopt)), 0600);
  auto made = run_process("/usr/bin/openssl", {"req", "-x509", "-new", "-key", dir.file(key_name), "-subj", subject, "-days", "30",
                                      "-out", dir.file(cert_name)});
  REQUIRE_MESSAGE(made.exit_code == 0, made.err);
}

struct ServedBoards {
  TempDir dir;
  emu::VendorRoot root = emu::load_or_create_vendor_root(dir.path());
  std::vector<std::unique_ptr<emu::Board>> boards;
  std::vector<std::unique_ptr<emu::BoardServer>> servers;

  explicit ServedBoards(int count, emu::FaultInjection faults = {}) {
    for (int i = 0; i < count; ++i) boards.push_back(emu::Board::create(dir.path(), root, {}, i));
    serve(faults);
  }
  void serve(emu::FaultInjection faults = {}) {
    servers.clear();
    for (auto& board : boards) {
      servers.push_back(std::make_unique<emu::BoardServer>(*board, dir.path() / (board->uid() + ".sock"),
                                                           emu::LinkShaping{}, faults));
      servers.back()->start();
    }
  }
  BoardAddress address(std::size_t i) const {
    return BoardAddress{BoardAddress::Kind::emulator, (dir.path() / (boards[i]->uid() + ".sock")).string(), boards[i]->uid()};
  }
  std::vector<BoardAddress> addresses() const {
    std::vector<BoardAddress> out;
    for (std::size_t i = 0; i < boards.size(); ++i) out.push_back(address(i));
    return out;
  }
};

struct StationFiles {
  TempDir dir;
  StationProfile profile;
  std::filesystem::path profile_path;

  explicit StationFiles(const std::filesystem::path& vendor_root, IdentityMode mode = IdentityMode::csr,
                        std::optional<std::int64_t> quota = std::nullopt) {
    make_ca(dir, "ca.key.pem", "ca.pem");
    write_file_atomic(dir.file("boot.pem"), as_bytes(generate_private_key_pem(KeyType::ecdsa_p256, std::nullopt)), 0600);
    profile.product = "Thermostat";
    profile.station_id = "line-1";
    profile.ledger = dir.path() / "ledger.sqlite";
    profile.quota = quota;
    profile.checkpoint_every = 4;
    profile.ca_key = dir.file("ca.key.pem");
    profile.station_key = profile.ca_key;
    profile.ca_certificate = dir.path() / "ca.pem";
    profile.vendor_root = vendor_root;
    profile.identity = mode;
    profile.boot_key_hash = describe_public_key(load_public_key_file(dir.file("boot.pem"), std::nullopt)).mcuboot_key_hash;
    profile.service_url = "https://service.example:8443";
    profile.trust_anchor = dir.path() / "ca.pem";
    profile.final_state = ManufacturingState::device_complete;
    profile_path = dir.path() / "station.toml";
    write_profile(profile_path, profile, true);
  }
  std::unique_ptr<Station> open() const { return open_station(profile_path, {}, "tester"); }
};

}  // namespace kiln::test
