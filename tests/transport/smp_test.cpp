// Tests for the SMP v2 codec: header bits, CBOR bodies, hostile packets, error outcomes.
#include <doctest/doctest.h>

#include "core/error.hpp"
#include "transport/board_address.hpp"
#include "transport/link.hpp"
#include "transport/provisioning_group.hpp"
#include "transport/smp.hpp"

using namespace kiln;

TEST_CASE("smp: header packs op, version, big-endian length and group") {
  smp::Header h{smp::Op::write, smp::smp_version_2, 0, 0x1234, 0x0040, 7, 3};
  Bytes bytes = smp::encode_header(h);
  CHECK(bytes == Bytes{0x0a, 0x00, 0x12, 0x34, 0x00, 0x40, 0x07, 0x03});
  auto back = smp::decode_header(bytes);
  CHECK(back.op == smp::Op::write);
  CHECK(back.version == 1);
  CHECK(back.length == 0x1234);
  CHECK(back.group == 64);
  CHECK(back.sequence == 7);
  CHECK(back.command == 3);
}

TEST_CASE("smp: echo frame matches the mcumgr wire bytes") {
  // mcumgr "echo hi": {"d": "hi"} in group 0 command 0, write, SMP v2.
  smp::Header h{smp::Op::write, smp::smp_version_2, 0, 0, smp::group::os, 0, 0};
  Bytes frame = smp::encode_frame(h, {{"d", "hi"}});
  CHECK(frame == Bytes{0x0a, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0xa1, 0x61, 0x64, 0x62, 0x68, 0x69});
  auto decoded = smp::decode_frame(frame);
  CHECK(decoded.body["d"] == "hi");
}

TEST_CASE("smp: bodies round-trip integers, byte strings, arrays and nested maps") {
  smp::Body body{{"off", 70000},
                 {"neg", -300},
                 {"sha", smp::binary(Bytes(32, 0xab))},
                 {"list", {1, "two", true, nullptr}},
                 {"err", {{"group", 64}, {"rc", 5}}}};
  auto back = smp::decode_body(smp::encode_body(body));
  CHECK(back == body);
  CHECK(smp::get_uint(back, "off") == 70000);
  CHECK(smp::get_bytes(back, "sha") == Bytes(32, 0xab));
}

TEST_CASE("smp: decoder accepts indefinite-length maps as zcbor firmware sends them") {
  Bytes indefinite{0xbf, 0x62, 'r', 'c', 0x00, 0xff};
  auto body = smp::decode_body(indefinite);
  CHECK(body["rc"] == 0);
}

TEST_CASE("smp: decoder rejects hostile packets") {
  auto rejects = [](Bytes bytes) { CHECK_THROWS_AS(smp::decode_body(bytes), Error); };
  rejects({0xa1, 0x61});                          // truncated key
  rejects({0xa1, 0x61, 0x64});                    // key without value
  rejects({0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff});  // array claims 2^64 items
  rejects({0xba, 0x7f, 0xff, 0xff, 0xff, 0x00});  // map claims 2^31 pairs
  rejects({0x5a, 0xff, 0xff, 0xff, 0xff, 0x00});  // byte string longer than the packet
  rejects({0xa1, 0x01, 0x02});                    // integer map key
  rejects({0x83, 0x01, 0x02, 0x03});              // not a map
  rejects({0xa0, 0x00});                          // trailing bytes
  rejects({0xff});                                // stray break
  rejects({0x1c});                                // reserved additional info
  rejects({0xa1, 0x61, 0x64, 0x5f, 0x41, 0x00, 0xff});  // indefinite byte string
  Bytes deep(64, 0x81);                           // 64 nested one-element arrays
  deep.insert(deep.begin(), {0xa1, 0x61, 0x64});
  deep.push_back(0x00);
  rejects(deep);

  Bytes frame = smp::encode_frame(smp::Header{}, {{"d", "x"}});
  frame[3] += 1;  // header length lies
  CHECK_THROWS_AS(smp::decode_frame(frame), Error);
  frame = smp::encode_frame(smp::Header{}, {{"d", "x"}});
  frame[0] |= 0x07;  // op 7 does not exist
  CHECK_THROWS_AS(smp::decode_frame(frame), Error);
}

TEST_CASE("smp: response outcome reads rc and v2 group errors") {
  CHECK(smp::response_outcome({{"r", "x"}}).ok());
  auto rc = smp::response_outcome(smp::error_body(smp::rc::invalid));
  CHECK(rc.rc == 3);
  CHECK_FALSE(rc.group);
  auto group = smp::response_outcome(smp::group_error_body(64, provisioning_rc::locked));
  CHECK(group.rc == 1);
  CHECK(*group.group == 64);
  CHECK_THROWS_AS(smp::response_outcome({{"err", 5}}), Error);
}

TEST_CASE("smp: packet assembler cuts a byte stream at packet boundaries") {
  Bytes a = smp::encode_frame(smp::Header{}, {{"d", "first"}});
  Bytes b = smp::encode_frame(smp::Header{}, {{"d", "second"}});
  Bytes stream = a;
  stream.insert(stream.end(), b.begin(), b.end());
  PacketAssembler assembler;
  assembler.append(ByteView(stream).first(5));
  CHECK_FALSE(assembler.next());
  assembler.append(ByteView(stream).subspan(5));
  CHECK(*assembler.next() == a);
  CHECK(*assembler.next() == b);
  CHECK_FALSE(assembler.next());
}


TEST_CASE("board address: usb, serial and emu prefixes; anything else is a UID") {
  auto usb = parse_board_address("usb:1-2.4");
  REQUIRE(usb);
  CHECK(usb->kind == BoardAddress::Kind::usb);
  CHECK(usb->location == "1-2.4");
  CHECK(parse_board_address("serial:/dev/ttyACM0")->text() == "serial:/dev/ttyACM0");
  auto emu = parse_board_address("emu:/tmp/d/0a1b2c.sock");
  CHECK(emu->uid_hint == "0a1b2c");
  CHECK_FALSE(parse_board_address("0a1b2c3d4e5f6071"));
  CHECK_THROWS_AS(parse_board_address("usb:frontport"), Error);
  CHECK_THROWS_AS(parse_board_address("emu:"), Error);
  auto ids = parse_usb_ids("1209:4b4e, 2fe3:0100");
  REQUIRE(ids.size() == 2);
  CHECK(ids[1] == std::pair<std::uint16_t, std::uint16_t>{0x2fe3, 0x0100});
  CHECK_THROWS_AS(parse_usb_ids("1209"), Error);
}
