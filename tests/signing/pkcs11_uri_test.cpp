// Unit tests for the RFC 7512 pkcs11: URI parser.
#include <doctest/doctest.h>

#include "core/error.hpp"
#include "signing/pkcs11_uri.hpp"

using kiln::Bytes;
using kiln::Error;
using kiln::ExitCode;
using kiln::parse_pkcs11_uri;

namespace {

ExitCode code_of(std::string_view text) {
  try {
    parse_pkcs11_uri(text);
  } catch (const Error& e) {
    return e.code();
  }
  return ExitCode::ok;
}

std::string message_of(std::string_view text) {
  try {
    parse_pkcs11_uri(text);
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

}  // namespace

TEST_CASE("pkcs11 uri: path attributes select token and object") {
  auto uri = parse_pkcs11_uri(
      "pkcs11:token=T;manufacturer=SoftHSM%20project;serial=0123;model=SoftHSM%20v2;"
      "object=sign%20key;id=%01%ff;type=private;slot-id=42");
  CHECK(uri.token == "T");
  CHECK(uri.manufacturer == "SoftHSM project");
  CHECK(uri.serial == "0123");
  CHECK(uri.model == "SoftHSM v2");
  CHECK(uri.object == "sign key");
  CHECK(uri.id == Bytes{0x01, 0xff});
  CHECK(uri.type == "private");
  CHECK(uri.slot_id == 42UL);
  CHECK_FALSE(uri.module_path);
  CHECK_FALSE(uri.pin_value);
}

TEST_CASE("pkcs11 uri: query attributes give module and PIN") {
  auto uri = parse_pkcs11_uri("pkcs11:token=T?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=12%334");
  CHECK(uri.module_path == "/usr/lib/softhsm/libsofthsm2.so");
  CHECK(uri.pin_value == "1234");

  CHECK(parse_pkcs11_uri("pkcs11:token=T?pin-source=file:/run/pin").pin_source == "/run/pin");
  CHECK(parse_pkcs11_uri("pkcs11:token=T?pin-source=file:///run/pin").pin_source == "/run/pin");
  CHECK(parse_pkcs11_uri("pkcs11:token=T?pin-source=file://localhost/run/pin").pin_source == "/run/pin");
  CHECK(parse_pkcs11_uri("pkcs11:token=T?pin-source=relative/pin.txt").pin_source == "relative/pin.txt");
}

TEST_CASE("pkcs11 uri: an id is bytes, not hex text") {
  CHECK(parse_pkcs11_uri("pkcs11:id=01").id == Bytes{'0', '1'});
  CHECK(parse_pkcs11_uri("pkcs11:id=%30%31").id == Bytes{'0', '1'});
  CHECK(parse_pkcs11_uri("pkcs11:id=").id == Bytes{});
}

TEST_CASE("pkcs11 uri: empty URI and empty segments are accepted, vendor attributes ignored") {
  auto uri = parse_pkcs11_uri("pkcs11:");
  CHECK_FALSE(uri.token);
  CHECK_FALSE(uri.object);
  uri = parse_pkcs11_uri("pkcs11:;token=T;;x-vendor=1;library-manufacturer=OpenSC?&x-foo=bar");
  CHECK(uri.token == "T");
  // '=' may appear inside a value; only the first one splits.
  CHECK(parse_pkcs11_uri("pkcs11:object=a=b").object == "a=b");
}

TEST_CASE("pkcs11 uri: malformed URIs are usage errors naming the problem") {
  CHECK(code_of("pkcs11x:token=T") == ExitCode::usage);
  CHECK(code_of("token=T") == ExitCode::usage);
  CHECK(code_of("pkcs11:token=%4") == ExitCode::usage);
  CHECK(code_of("pkcs11:token=%") == ExitCode::usage);
  CHECK(code_of("pkcs11:token=%zz") == ExitCode::usage);
  CHECK(code_of("pkcs11:id=%0g") == ExitCode::usage);
  CHECK(code_of("pkcs11:token=T;token=U") == ExitCode::usage);
  CHECK(code_of("pkcs11:objekt=k") == ExitCode::usage);
  CHECK(code_of("pkcs11:type=secret") == ExitCode::usage);
  CHECK(code_of("pkcs11:slot-id=1x") == ExitCode::usage);
  CHECK(code_of("pkcs11:slot-id=") == ExitCode::usage);
  CHECK(code_of("pkcs11:token") == ExitCode::usage);
  CHECK(code_of("pkcs11:=T") == ExitCode::usage);
  CHECK(code_of("pkcs11:token=T?pin-value=1&pin-source=/f") == ExitCode::usage);
  CHECK(code_of("pkcs11:token=T?pin-source=|/bin/getpin") == ExitCode::usage);
  CHECK(code_of("pkcs11:token=T?pin-source=file://otherhost/pin") == ExitCode::usage);
  CHECK(code_of("pkcs11:token=T?module-name=softhsm2") == ExitCode::usage);
  CHECK(code_of("pkcs11:token=T?frobnicate=1") == ExitCode::usage);
  CHECK(code_of("pkcs11:token=a\nb") == ExitCode::usage);
  CHECK(parse_pkcs11_uri("pkcs11:token=a%0ab").token == "a\nb");  // escaped, any byte is fine
  CHECK(message_of("pkcs11:objekt=k").find("objekt") != std::string::npos);
}

TEST_CASE("pkcs11 uri: errors and descriptions never contain the PIN") {
  CHECK(message_of("pkcs11:token=T?pin-value=s3cr%et").find("s3cr") == std::string::npos);
  CHECK(message_of("pkcs11:token=T?pin-value=s3cret&pin-value=s3cret").find("s3cret") == std::string::npos);
  CHECK(message_of("pkcs11:token=T;pin-values3cret").find("s3cret") == std::string::npos);
  auto uri = parse_pkcs11_uri("pkcs11:token=T;object=k?pin-value=s3cret&module-path=/m.so");
  CHECK(uri.description().find("s3cret") == std::string::npos);
  CHECK(uri.description() == "pkcs11:token=T;object=k?module-path=/m.so");
}

TEST_CASE("pkcs11 uri: description round-trips through the parser") {
  auto uri = parse_pkcs11_uri("pkcs11:token=My%20Token;object=k%3Bey;id=%01%02;type=private");
  CHECK(uri.description() == "pkcs11:token=My%20Token;object=k%3Bey;id=%01%02;type=private");
  auto again = parse_pkcs11_uri(uri.description());
  CHECK(again.token == uri.token);
  CHECK(again.object == uri.object);
  CHECK(again.id == uri.id);
  CHECK(uri.token_description() == "'My Token'");
  CHECK(uri.object_description() == "'k;ey' id 0102");
}
