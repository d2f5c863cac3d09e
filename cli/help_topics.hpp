// Concept help for `kiln help TOPIC`: short texts on the ideas behind the commands.
#pragma once

#include <span>
#include <string>

namespace kiln::cli {

struct HelpTopic {
  const char* name;
  const char* summary;
  const char* text;
};

std::span<const HelpTopic> help_topics();
// Throws Error(usage) naming the topics (and the closest one) when `name` is unknown.
const HelpTopic& find_help_topic(const std::string& name);
// The exit-codes topic is generated from the ExitCode table so it cannot drift.
std::string exit_codes_text();

}  // namespace kiln::cli
