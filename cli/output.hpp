// Renders command results (JSON values) as table, json, jsonl, yaml or csv: the same data in each.
#pragma once

#include <iosfwd>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace kiln::cli {

// Results keep the field order the command chose (ordered_json), so tables and JSON read naturally.
using Json = nlohmann::ordered_json;

enum class OutputFormat { table, json, jsonl, yaml, csv };

OutputFormat parse_output_format(std::string_view name);  // throws Error(usage)
std::string_view output_format_name(OutputFormat format);

struct RenderOptions {
  OutputFormat format = OutputFormat::table;
  bool color = false;
  int width = 0;  // terminal columns for tables; 0 = unlimited
};

// One result: an object (rendered as a key/value view in table mode) or an array of objects.
void render(std::ostream& out, const Json& value, const RenderOptions& options);

// A stream of records of unknown length, rendered in constant memory where the format allows
// (json writes "[", the records, "]"; jsonl and csv write a line each; table buffers a screenful
// to size its columns, then streams with those widths).
class RecordWriter {
 public:
  virtual ~RecordWriter() = default;
  virtual void add(const Json& record) = 0;
  virtual void finish() = 0;
};
std::unique_ptr<RecordWriter> make_record_writer(std::ostream& out, const RenderOptions& options);

// Text from devices, boards and the service made safe for a terminal: C0 controls (ESC, BEL,
// CR, ...), DEL, C1 controls (U+0080..U+009F, e.g. the 8-bit CSI U+009B), bidirectional
// overrides (U+202A..U+202E, U+2066..U+2069) and bytes that are not UTF-8 become visible escapes
// (\e -> "\x1b", tab -> "\t", U+009B -> "\u009b", a stray 0xff -> "\xff"); other Unicode is kept.
// Newlines are escaped too unless keep_newlines (multi-line messages on stderr). The one escaping
// function for everything kiln prints that it did not write itself.
std::string terminal_safe(std::string_view text, bool keep_newlines = false);

// JSON text (indent < 0: one line) that never throws on invalid UTF-8 (replaced by U+FFFD) and
// escapes DEL, C1 controls and bidirectional overrides as \u sequences, as it does C0 controls.
std::string json_text(const Json& value, int indent = -1);

// Flattens nested objects into dotted keys ("header.version"); arrays of scalars join with ",".
Json flatten(const Json& value);

}  // namespace kiln::cli
