#include "cli/manifest_views.hpp"

#include <fmt/format.h>

#include "manifests/suit_json.hpp"

namespace kiln::cli {
namespace {

std::string digest_text(const suit::Digest& digest) {
  return suit::digest_algorithm_name(digest.algorithm) + ":" + to_hex(digest.bytes);
}

}  // namespace

Json envelope_summary(const std::string& file, const suit::Envelope& envelope, std::uint64_t size) {
  auto wrapper = suit::authentication(envelope);
  Json signatures = Json::array();
  for (const auto& block : wrapper.authentication_blocks) signatures.push_back(cose::block_algorithm_name(block));
  return {{"file", file},
          {"size", size},
          {"manifest-sequence-number", suit::sequence_number(suit::manifest(envelope))},
          {"manifest-digest", digest_text(wrapper.digest)},
          {"signatures", signatures}};
}

Json envelope_readable_view(const std::string& file, const suit::Envelope& envelope, std::uint64_t size) {
  Json view = envelope_summary(file, envelope, size);
  suit::Json full = suit::envelope_to_json(envelope);
  const suit::Json& m = full["manifest"];
  Json components = Json::array();
  for (const auto& id : m["common"]["components"]) components.push_back(id.dump());
  view["components"] = components;
  Json images = Json::array();
  for (const auto& image : suit::declared_images(envelope))
    images.push_back(fmt::format("{}{}", digest_text(image.digest),
                                 image.size ? fmt::format(" ({} bytes)", *image.size) : ""));
  view["images"] = images;
  if (m.contains("reference-uri")) view["reference-uri"] = m["reference-uri"];
  Json sequences = Json::array();
  for (const auto& item : m.items()) {
    const std::string& name = item.key();
    if (name == "manifest-version" || name == "manifest-sequence-number" || name == "common" || name == "reference-uri")
      continue;
    bool severed = item.value().is_object() && item.value().contains("algorithm-id");
    bool carried = full.contains(name);
    sequences.push_back(severed ? fmt::format("{} ({})", name, carried ? "severable, present" : "severed") : name);
  }
  view["elements"] = sequences;
  return view;
}

Json verify_report_json(const std::string& file, const suit::VerifyReport& report) {
  Json signatures = Json::array();
  for (const auto& s : report.signatures)
    signatures.push_back({{"algorithm", s.algorithm}, {"key", s.key.empty() ? Json(nullptr) : Json(s.key)}});
  Json images = Json::array();
  for (const auto& i : report.images)
    images.push_back({{"path", i.path.string()}, {"digest", to_hex(i.digest.bytes)}, {"size", i.size}});
  Json out = {{"file", file},
          {"verified", true},
          {"manifest-sequence-number", report.sequence_number},
          {"manifest-digest", digest_text(report.manifest_digest)},
          {"signatures", signatures},
          {"severable-checked", report.severable_checked},
          {"severed", report.severed},
          {"images", images}};
  if (report.count)
    out["threshold"] = {{"valid", report.count->valid},
                        {"required", report.count->required},
                        {"keys", report.count->trusted},
                        {"signers", report.count->signers},
                        {"untrusted-signatures", report.count->untrusted}};
  return out;
}

}  // namespace kiln::cli
