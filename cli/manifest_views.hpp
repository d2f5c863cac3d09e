// The JSON views of SUIT envelopes and verification reports that `kiln manifest` renders.
#pragma once

#include <cstdint>
#include <string>

#include "cli/output.hpp"
#include "manifests/suit_envelope.hpp"
#include "manifests/suit_verify.hpp"

namespace kiln::cli {

// What every writing verb reports: file, size, sequence number, manifest digest, signature algorithms.
Json envelope_summary(const std::string& file, const suit::Envelope& envelope, std::uint64_t size);
// `manifest show` as a table: the summary, components, declared images and which elements are present or severed.
Json envelope_readable_view(const std::string& file, const suit::Envelope& envelope, std::uint64_t size);
// `manifest verify`.
Json verify_report_json(const std::string& file, const suit::VerifyReport& report);

}  // namespace kiln::cli
