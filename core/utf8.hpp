// UTF-8 validation: the one strict definition kiln uses (no overlong forms, no surrogates, nothing beyond U+10FFFF).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kiln {

// Length of the UTF-8 sequence starting at text[i] and its code point; 0 when it is not valid UTF-8
// (overlong, surrogate, beyond U+10FFFF, truncated).
std::size_t utf8_sequence(std::string_view text, std::size_t i, char32_t& code_point);

// Whether all of `text` is valid UTF-8.
bool is_utf8(std::string_view text);

// `text` with each byte that does not start a valid sequence replaced by U+FFFD (as a JSON encoder replaces).
std::string to_valid_utf8(std::string_view text);

}  // namespace kiln
