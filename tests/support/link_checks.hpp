// Checks any board link must pass (serial, USB, socket): what the link-specific tests share.
#pragma once

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "core/files.hpp"
#include "emulator/board.hpp"
#include "transport/board_api.hpp"

namespace kiln::test {

// A test image of version MAJOR.MINOR.REVISION and `size` bytes, uploaded through `client` (windowed, in
// chunks), lands in the board's slot 1 with that version and the hash the upload reported.
inline void check_upload_lands_in_slot_1(SmpClient& client, const std::filesystem::path& dir, std::uint8_t major,
                                         std::uint8_t minor, std::uint16_t revision, std::size_t size) {
  auto image = dir / "fw.bin";
  write_file_atomic(image, emu::make_test_image(major, minor, revision, size));
  auto result = upload_image(client, image, {});
  auto slots = read_image_state(client);
  REQUIRE(slots.size() == 2);
  CHECK(slots[1].version ==
        std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(revision));
  CHECK(slots[1].hash == result.sha256);
}

}  // namespace kiln::test
