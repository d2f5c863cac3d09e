// Walks CLI11's App/Option objects into CommandSpec; edit-distance suggestions.
#include "cli/command_tree.hpp"

#include <algorithm>

#include <CLI/CLI.hpp>

namespace kiln::cli {
namespace {

// CLI11 renders IsMember as "TEXT:{a,b,c}" and ExistingFile as "TEXT:FILE" in the type name.
void parse_type_name(const std::string& type_name, OptionSpec& spec) {
  auto brace = type_name.find('{');
  if (brace != std::string::npos) {
    auto end = type_name.find('}', brace);
    std::string list = type_name.substr(brace + 1, end - brace - 1);
    std::size_t start = 0;
    while (start <= list.size()) {
      auto comma = list.find(',', start);
      if (comma == std::string::npos) comma = list.size();
      if (comma > start) spec.choices.push_back(list.substr(start, comma - start));
      start = comma + 1;
    }
  }
  if (type_name.find("FILE") != std::string::npos || type_name.find("PATH") != std::string::npos) spec.takes_file = true;
  if (type_name.find("DIR") != std::string::npos) spec.takes_dir = true;
}

bool looks_like_file(const std::string& name, const std::string& description) {
  static const char* words[] = {"file", "path", "FILE", "PATH", "KEYREF", "IN", "OUT", "--out", "--key", "--image",
                                "--manifest", "--profile", "--ca-", "--cert", "--from"};
  for (auto w : words)
    if (name.find(w) != std::string::npos) return true;
  std::string d = description;
  std::transform(d.begin(), d.end(), d.begin(), [](unsigned char c) { return std::tolower(c); });
  return d.find(" file") != std::string::npos || d.starts_with("file") || d.find("path") != std::string::npos;
}

}  // namespace

CommandSpec describe(const CLI::App& app) {
  CommandSpec spec;
  spec.name = app.get_name();
  spec.description = app.get_description();
  for (const CLI::Option* opt : app.get_options()) {
    OptionSpec o;
    for (auto& s : opt->get_snames()) o.names.push_back("-" + s);
    for (auto& l : opt->get_lnames()) o.names.push_back("--" + l);
    o.positional = opt->get_lnames().empty() && opt->get_snames().empty();
    if (o.positional) o.value_name = opt->get_name();
    o.description = opt->get_description();
    o.required = opt->get_required();
    if (opt->get_expected_max() != 0 || o.positional) {
      std::string type_name = opt->get_type_name();
      if (o.value_name.empty()) o.value_name = type_name.empty() ? "VALUE" : type_name.substr(0, type_name.find(':'));
      parse_type_name(type_name, o);
      bool board = false;
      for (auto& n : o.names)
        if (n == "--board") board = true;
      o.takes_board = board;
      if (!board && o.choices.empty() && !o.takes_dir &&
          looks_like_file(opt->get_name() + " " + (o.names.empty() ? "" : o.names.back()), o.description))
        o.takes_file = true;
    }
    spec.options.push_back(std::move(o));
  }
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; }))
    spec.subcommands.push_back(describe(*sub));
  return spec;
}

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  auto distance = [](const std::string& a, const std::string& b) {
    std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
      cur[0] = i;
      for (std::size_t j = 1; j <= b.size(); ++j) {
        std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
        cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost});
      }
      std::swap(prev, cur);
    }
    return prev[b.size()];
  };
  std::string best;
  std::size_t best_distance = std::max<std::size_t>(2, word.size() / 3) + 1;
  for (auto& c : candidates) {
    std::size_t d = distance(word, c);
    if (c.starts_with(word) && word.size() >= 2) d = std::min<std::size_t>(d, 1);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  return best;
}

}  // namespace kiln::cli
