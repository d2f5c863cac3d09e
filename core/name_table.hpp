// One string per value of a state enum, each way: the table behind each family's name and parse functions.
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <string_view>
#include <utility>

namespace kiln {

template <typename Enum, std::size_t N>
using NameTable = std::array<std::pair<Enum, std::string_view>, N>;

// The value's name; "?" only for a value missing from the table (each family's unit test walks every value).
template <typename Enum, std::size_t N>
constexpr std::string_view name_in(const NameTable<Enum, N>& table, Enum value) {
  for (const auto& entry : table)
    if (entry.first == value) return entry.second;
  return "?";
}

// The value named exactly `text`; nullopt for any other text (callers decide what an unknown name means).
template <typename Enum, std::size_t N>
constexpr std::optional<Enum> value_in(const NameTable<Enum, N>& table, std::string_view text) {
  for (const auto& entry : table)
    if (entry.second == text) return entry.first;
  return std::nullopt;
}

}  // namespace kiln
