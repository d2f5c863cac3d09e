// Output renderers: table, json, jsonl, yaml, csv.
#include "cli/output.hpp"

#include <algorithm>
#include <ostream>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "core/error.hpp"
#include "core/utf8.hpp"

namespace kiln::cli {
namespace {

using json = Json;

bool is_bidi_control(char32_t cp) { return (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069); }

std::string scalar_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "";
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  return json_text(v);
}

// What table and CSV cells show.
std::string cell_text(const json& v) { return terminal_safe(scalar_text(v)); }

void flatten_into(json& out, const std::string& prefix, const json& v) {
  if (v.is_object()) {
    if (v.empty() && !prefix.empty()) out[prefix] = "";
    for (auto& [k, item] : v.items()) flatten_into(out, prefix.empty() ? k : prefix + "." + k, item);
  } else if (v.is_array()) {
    bool scalars = std::all_of(v.begin(), v.end(), [](const json& e) { return !e.is_structured(); });
    if (scalars) {
      std::string joined;
      for (auto& e : v) {
        if (!joined.empty()) joined += ",";
        joined += scalar_text(e);
      }
      out[prefix] = joined;
    } else {
      for (std::size_t i = 0; i < v.size(); ++i) flatten_into(out, fmt::format("{}.{}", prefix, i), v[i]);
    }
  } else {
    out[prefix] = v;
  }
}

// --- CSV ---
std::string csv_field(const std::string& raw) {
  std::string s = terminal_safe(raw, true);  // a newline inside a quoted field is CSV; ESC and CR are not
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) {
    if (c == '"') q += '"';
    q += c;
  }
  return q + "\"";
}

// --- YAML ---
bool yaml_needs_quotes(const std::string& s) {
  if (s.empty()) return true;
  static const char* reserved[] = {"true", "false", "null", "yes", "no", "on", "off", "~", "True", "False", "Null"};
  for (auto r : reserved)
    if (s == r) return true;
  if (s.find_first_of(":#{}[]&*!|>'\"%@`,\n\t") != std::string::npos) return true;
  if (s.front() == ' ' || s.back() == ' ' || s.front() == '-' || s.front() == '?') return true;
  // Looks like a number? Quote to keep it a string.
  char* end = nullptr;
  std::strtod(s.c_str(), &end);
  return end && *end == '\0';
}

// A string as a YAML scalar: plain when it reads back as the same string, double-quoted when it would change
// type or holds what a terminal must not see raw (then every non-ASCII character is escaped too, so a
// bidi control or an invalid byte shows as an escape; yaml-cpp writes the escapes).
void yaml_string(YAML::Emitter& out, const std::string& s) {
  bool unsafe = terminal_safe(s) != s;
  if (unsafe || yaml_needs_quotes(s)) out << YAML::DoubleQuoted;
  if (unsafe) out << YAML::EscapeNonAscii;
  out << s;
}

void yaml_node(YAML::Emitter& out, const json& v) {
  if (v.is_object()) {
    if (v.empty()) out << YAML::Flow;
    out << YAML::BeginMap;
    for (const auto& item : v.items()) {
      out << YAML::Key;
      yaml_string(out, item.key());
      out << YAML::Value;
      yaml_node(out, item.value());
    }
    out << YAML::EndMap;
  } else if (v.is_array()) {
    if (v.empty()) out << YAML::Flow;
    out << YAML::BeginSeq;
    for (const auto& item : v) yaml_node(out, item);
    out << YAML::EndSeq;
  } else if (v.is_string()) {
    yaml_string(out, v.get<std::string>());
  } else if (v.is_null()) {
    out << YAML::Null;
  } else {
    out << json_text(v);  // numbers and booleans exactly as JSON writes them: plain scalars
  }
}

void yaml_emit(std::ostream& out, const json& v) {
  YAML::Emitter emitter;
  emitter.SetIndent(2);
  yaml_node(emitter, v);
  if (!emitter.good())
    throw Error(ExitCode::failure, fmt::format("cannot write YAML: {}", emitter.GetLastError()));
  out << emitter.c_str() << "\n";
}

// --- table ---
std::size_t display_width(const std::string& s) {
  std::size_t w = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) ++w;  // count UTF-8 code points
  return w;
}

std::string fit(const std::string& s, std::size_t width) {
  if (display_width(s) <= width) return s + std::string(width - display_width(s), ' ');
  if (width == 0) return "";
  std::string out;
  std::size_t w = 0;
  for (std::size_t i = 0; i < s.size() && w + 1 < width; ++i) {
    out += s[i];
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) ++w;
  }
  while (!out.empty() && (static_cast<unsigned char>(out.back()) & 0xC0) == 0x80) out.pop_back();
  out += "…";
  return out + std::string(width > w + 1 ? width - w - 1 : 0, ' ');
}

void render_key_values(std::ostream& out, const json& flat, const RenderOptions& options) {
  std::size_t key_width = 0;
  for (auto& [k, v] : flat.items()) key_width = std::max(key_width, display_width(terminal_safe(k)));
  for (auto& [k, v] : flat.items()) {
    std::string key = fit(terminal_safe(k), key_width);
    if (options.color) out << "\x1b[1m" << key << "\x1b[0m";
    else out << key;
    out << "  " << cell_text(v) << "\n";
  }
}

class TableWriter final : public RecordWriter {
 public:
  TableWriter(std::ostream& out, RenderOptions options) : out_(out), options_(options) {}
  void add(const json& record) override {
    json flat = flatten(record);
    if (!sized_) {
      pending_.push_back(std::move(flat));
      if (pending_.size() >= 200) size_and_flush();
      return;
    }
    print_row(flat);
  }
  void finish() override {
    if (!sized_) size_and_flush();
  }

 private:
  void size_and_flush() {
    for (auto& row : pending_)
      for (auto& [k, v] : row.items()) {
        auto it = std::find(columns_.begin(), columns_.end(), k);
        std::size_t w = std::max(display_width(terminal_safe(k)), display_width(cell_text(v)));
        if (it == columns_.end()) {
          columns_.push_back(k);
          widths_.push_back(w);
        } else {
          auto& cw = widths_[static_cast<std::size_t>(it - columns_.begin())];
          cw = std::max(cw, w);
        }
      }
    fit_to_terminal();
    sized_ = true;
    if (!columns_.empty()) {
      std::string header;
      for (std::size_t i = 0; i < columns_.size(); ++i) {
        std::string name = terminal_safe(columns_[i]);
        std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::toupper(c); });
        header += fit(name, widths_[i]);
        if (i + 1 < columns_.size()) header += "  ";
      }
      while (!header.empty() && header.back() == ' ') header.pop_back();
      if (options_.color) out_ << "\x1b[1m" << header << "\x1b[0m\n";
      else out_ << header << "\n";
    }
    for (auto& row : pending_) print_row(row);
    pending_.clear();
  }
  // Shrink the widest columns until the table fits the terminal; every column keeps >= 6.
  void fit_to_terminal() {
    if (options_.width <= 0 || columns_.empty()) return;
    auto total = [&] {
      std::size_t t = 2 * (columns_.size() - 1);
      for (auto w : widths_) t += w;
      return t;
    };
    std::size_t limit = static_cast<std::size_t>(options_.width);
    while (total() > limit) {
      auto widest = std::max_element(widths_.begin(), widths_.end());
      if (*widest <= 6) break;
      *widest -= 1;
    }
  }
  void print_row(const json& flat) {
    std::string line;
    for (std::size_t i = 0; i < columns_.size(); ++i) {
      auto it = flat.find(columns_[i]);
      line += fit(it == flat.end() ? "" : cell_text(*it), widths_[i]);
      if (i + 1 < columns_.size()) line += "  ";
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out_ << line << "\n";
  }

  std::ostream& out_;
  RenderOptions options_;
  bool sized_ = false;
  std::vector<json> pending_;
  std::vector<std::string> columns_;
  std::vector<std::size_t> widths_;
};

class JsonWriter final : public RecordWriter {
 public:
  explicit JsonWriter(std::ostream& out) : out_(out) {}
  void add(const json& record) override {
    out_ << (first_ ? "[\n  " : ",\n  ") << json_text(record);
    first_ = false;
  }
  void finish() override { out_ << (first_ ? "[]\n" : "\n]\n"); }

 private:
  std::ostream& out_;
  bool first_ = true;
};

class JsonLinesWriter final : public RecordWriter {
 public:
  explicit JsonLinesWriter(std::ostream& out) : out_(out) {}
  // Flushed per record: a consumer reading a pipe (a line controller, `factory run -o jsonl`) gets each event
  // when it happens, not when the buffer fills or the command ends.
  void add(const json& record) override { out_ << json_text(record) << "\n" << std::flush; }
  void finish() override {}

 private:
  std::ostream& out_;
};

class YamlWriter final : public RecordWriter {
 public:
  explicit YamlWriter(std::ostream& out) : out_(out) {}
  void add(const json& record) override {
    yaml_emit(out_, json::array({record}));
    any_ = true;
  }
  void finish() override {
    if (!any_) out_ << "[]\n";
  }

 private:
  std::ostream& out_;
  bool any_ = false;
};

class CsvWriter final : public RecordWriter {
 public:
  explicit CsvWriter(std::ostream& out) : out_(out) {}
  void add(const json& record) override {
    json flat = flatten(record);
    if (columns_.empty()) {
      for (auto& [k, v] : flat.items()) columns_.push_back(k);
      write_line(columns_);
    }
    std::vector<std::string> cells;
    for (auto& c : columns_) {
      auto it = flat.find(c);
      cells.push_back(it == flat.end() ? "" : scalar_text(*it));
    }
    write_line(cells);
  }
  void finish() override {}

 private:
  void write_line(const std::vector<std::string>& cells) {
    for (std::size_t i = 0; i < cells.size(); ++i) out_ << (i ? "," : "") << csv_field(cells[i]);
    out_ << "\n";
  }
  std::ostream& out_;
  std::vector<std::string> columns_;
};

}  // namespace

std::string terminal_safe(std::string_view text, bool keep_newlines) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    char32_t cp = 0;
    std::size_t length = utf8_sequence(text, i, cp);
    if (length == 0) {  // not UTF-8: show the byte
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(text[i]));
      ++i;
      continue;
    }
    if (cp < 0x20 || cp == 0x7F) {
      if (cp == '\n' && keep_newlines) out += '\n';
      else if (cp == '\n') out += "\\n";
      else if (cp == '\t') out += "\\t";
      else if (cp == '\r') out += "\\r";
      else out += fmt::format("\\x{:02x}", static_cast<unsigned>(cp));
    } else if ((cp >= 0x80 && cp <= 0x9F) || is_bidi_control(cp)) {
      out += fmt::format("\\u{:04x}", static_cast<unsigned>(cp));
    } else {
      out.append(text.substr(i, length));
    }
    i += length;
  }
  return out;
}

std::string json_text(const Json& value, int indent) {
  std::string text = value.dump(indent, ' ', false, Json::error_handler_t::replace);
  // dump escapes C0 controls; DEL, C1 and bidi overrides pass through. They can only occur inside
  // strings (JSON's own syntax is ASCII), where \uNNNN means the same character.
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    char32_t cp = 0;
    std::size_t length = utf8_sequence(text, i, cp);
    if (length == 0) {  // dump's output is UTF-8; defensive
      length = 1;
      cp = static_cast<unsigned char>(text[i]);
    }
    if (cp == 0x7F || (cp >= 0x80 && cp <= 0x9F) || is_bidi_control(cp))
      out += fmt::format("\\u{:04x}", static_cast<unsigned>(cp));
    else
      out.append(text, i, length);
    i += length;
  }
  return out;
}

OutputFormat parse_output_format(std::string_view name) {
  if (name == "table") return OutputFormat::table;
  if (name == "json") return OutputFormat::json;
  if (name == "jsonl") return OutputFormat::jsonl;
  if (name == "yaml") return OutputFormat::yaml;
  if (name == "csv") return OutputFormat::csv;
  throw Error(ExitCode::usage, fmt::format("unknown output format '{}'", name),
              "use one of table, json, jsonl, yaml, csv");
}

std::string_view output_format_name(OutputFormat format) {
  switch (format) {
    case OutputFormat::table: return "table";
    case OutputFormat::json: return "json";
    case OutputFormat::jsonl: return "jsonl";
    case OutputFormat::yaml: return "yaml";
    case OutputFormat::csv: return "csv";
  }
  return "table";
}

json flatten(const json& value) {
  json out = json::object();
  flatten_into(out, "", value);
  return out;
}

std::unique_ptr<RecordWriter> make_record_writer(std::ostream& out, const RenderOptions& options) {
  switch (options.format) {
    case OutputFormat::table: return std::make_unique<TableWriter>(out, options);
    case OutputFormat::json: return std::make_unique<JsonWriter>(out);
    case OutputFormat::jsonl: return std::make_unique<JsonLinesWriter>(out);
    case OutputFormat::yaml: return std::make_unique<YamlWriter>(out);
    case OutputFormat::csv: return std::make_unique<CsvWriter>(out);
  }
  return std::make_unique<JsonWriter>(out);
}

void render(std::ostream& out, const json& value, const RenderOptions& options) {
  if (value.is_array()) {
    auto writer = make_record_writer(out, options);
    for (auto& record : value) writer->add(record);
    writer->finish();
    return;
  }
  switch (options.format) {
    case OutputFormat::table:
      if (value.is_object()) render_key_values(out, flatten(value), options);
      else out << cell_text(value) << "\n";
      break;
    case OutputFormat::json: out << json_text(value, 2) << "\n"; break;
    case OutputFormat::jsonl: out << json_text(value) << "\n"; break;
    case OutputFormat::yaml: yaml_emit(out, value); break;
    case OutputFormat::csv: {
      CsvWriter writer(out);
      writer.add(value);
      break;
    }
  }
}

}  // namespace kiln::cli
