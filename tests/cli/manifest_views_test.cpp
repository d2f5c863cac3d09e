// Tests for cli/manifest_views on the SUIT draft's example 2 (values from the draft's own text: sequence number 2,
// manifest digest 6a5197ed…, ES256, the image digest and size, reference URI, severable install and text), signed
// and severed, and on hand-made verification reports.
#include <doctest/doctest.h>

#include "cli/manifest_views.hpp"
#include "core/files.hpp"
#include "tests/support/vectors.hpp"

using namespace kiln;
using namespace kiln::cli;

namespace {

constexpr const char* example2_digest = "sha256:6a5197ed8f9dccf733d1c89a359441708e070b4c6dcb9a1c2c82c6165f609b90";

suit::Envelope example(const std::string& name) { return suit::parse_envelope(read_file(test::vector("suit/" + name))); }

}  // namespace

TEST_CASE("manifest_views: the summary every writing verb prints") {
  CHECK(envelope_summary("ex2.suit", example("example2.signed.suit"), 512).dump() ==
        std::string(R"({"file":"ex2.suit","size":512,"manifest-sequence-number":2,"manifest-digest":")") +
            example2_digest + R"(","signatures":["ES256"]})");
  CHECK(envelope_summary("u.suit", example("example0.unsigned.suit"), 1)["signatures"] == Json::array());
}

TEST_CASE("manifest_views: manifest show lists components, declared images, the URI and severable elements") {
  auto view = envelope_readable_view("ex2.suit", example("example2.signed.suit"), 512);
  CHECK(view["manifest-digest"] == example2_digest);
  CHECK(view["components"] == Json::array({R"(["00"])"}));
  CHECK(view["images"] ==
        Json::array({"sha256:00112233445566778899aabbccddeeff0123456789abcdeffedcba9876543210 (34768 bytes)"}));
  CHECK(view["reference-uri"] == "https://git.io/JJYoj");
  CHECK(view["elements"] ==
        Json::array({"validate", "invoke", "install (severable, present)", "text (severable, present)"}));

  auto severed = envelope_readable_view("ex2.suit", example("example2.severed.suit"), 300);
  CHECK(severed["elements"] == Json::array({"validate", "invoke", "install (severed)", "text (severed)"}));
  CHECK(severed["manifest-digest"] == example2_digest);  // severing leaves the manifest as it is
  CHECK_FALSE(envelope_readable_view("ex0.suit", example("example0.signed.suit"), 1).contains("reference-uri"));
}

TEST_CASE("manifest_views: a verification report, with the M-of-N count when a threshold was asked") {
  suit::VerifyReport report;
  report.manifest_digest = {suit::digest_sha256, Bytes{0xab, 0xcd}};
  report.sequence_number = 9;
  report.signatures = {{"ES256", "release.pem"}, {"EdDSA", ""}};
  report.severable_checked = {"install"};
  report.severed = {"text"};
  report.images = {{"app.bin", {suit::digest_sha256, Bytes{0x01}}, 4096}};
  CHECK(verify_report_json("m.suit", report).dump() ==
        R"({"file":"m.suit","verified":true,"manifest-sequence-number":9,"manifest-digest":"sha256:abcd",)"
        R"("signatures":[{"algorithm":"ES256","key":"release.pem"},{"algorithm":"EdDSA","key":null}],)"
        R"("severable-checked":["install"],"severed":["text"],"images":[{"path":"app.bin","digest":"01","size":4096}]})");
  report.count = suit::SignatureCount{1, 2, 3, 1, {"release.pem"}};
  CHECK(verify_report_json("m.suit", report)["threshold"].dump() ==
        R"({"valid":1,"required":2,"keys":3,"signers":["release.pem"],"untrusted-signatures":1})");
}
