// The SUIT templates of draft-37 section 7 (compatibility check, secure boot, download, install, load):
// how a component description becomes command sequences, byte for byte as the draft's examples.
#include "manifests/suit_create.hpp"

#include <fmt/format.h>
#include <openssl/evp.h>

#include <algorithm>
#include <charconv>

#include "core/error.hpp"
#include "core/files.hpp"
#include "core/utf8.hpp"
#include "manifests/suit_json.hpp"
#include "signing/image_delivery.hpp"

namespace kiln::suit {
namespace {

using cbor::Value;

// Command and parameter ids of draft-37 used by the templates.
namespace command {
constexpr std::int64_t vendor_identifier = 1, class_identifier = 2, image_match = 3, component_slot = 5,
                       set_component_index = 12, try_each = 15, override_parameters = 20, fetch = 21, copy = 22,
                       invoke = 23;
}
namespace parameter {
constexpr std::int64_t vendor_id = 1, class_id = 2, image_digest = 3, slot = 5, image_size = 14, uri = 21,
                       source_component = 22;
}
// Reporting policies the draft's examples put on each command.
constexpr std::uint64_t report_all = 15, report_on_failure = 5, report_on_success = 2;

Error description_error(const std::string& field, const std::string& reason) {
  return Error(ExitCode::failure, fmt::format("manifest description: {}: {}", field, reason),
               "the description follows the schema of the draft's exampleN.json files (docs/manifests.md)");
}

using Json = nlohmann::ordered_json;

Value component_id(const Json& j, const std::string& field) {
  if (!j.is_array() || j.empty())
    throw description_error(field, "a component id is an array of hex strings, e.g. [\"00\"]");
  Value out = Value::array();
  for (const auto& part : j) {
    if (!part.is_string()) throw description_error(field, "component id parts are hex strings");
    out.items.push_back(Value::byte_string(from_hex(part.get<std::string>())));
  }
  return out;
}

// Emits set-component-index only when the manifest has several components and the index changes.
class SequenceBuilder {
 public:
  explicit SequenceBuilder(bool several_components) : several_(several_components) {}
  void select(std::size_t index) {
    if (several_ && current_ != index) add(command::set_component_index, Value::uint(index));
    current_ = index;
  }
  void add(std::int64_t id, Value argument) {
    items_.items.push_back(Value::integer(id));
    items_.items.push_back(std::move(argument));
  }
  void override_parameters(Value parameters) { add(command::override_parameters, std::move(parameters)); }
  bool empty() const { return items_.items.empty(); }
  const Value& value() const { return items_; }

 private:
  bool several_;
  std::optional<std::size_t> current_;
  Value items_ = Value::array();
};

struct Component {
  const Json* json;
  Value install_id;
  Digest install_digest;
  std::optional<std::uint64_t> install_size;
};

Digest digest_field(const Json& c, const char* field, const std::string& where) {
  if (!c.contains(field)) throw description_error(where, fmt::format("\"{}\" is required", field));
  return digest_from_json(c[field], where + "." + field);
}

// The file's SHA-256 and size, streamed in constant memory. An encrypted MCUboot image is described without
// its content-key TLV, so the manifest fits every re-wrap of it (docs/encrypted-delivery.md).
std::pair<Digest, std::uint64_t> hash_file(const std::filesystem::path& path) {
  std::optional<mcuboot::KeylessDigest> keyless;
  try {
    keyless = mcuboot::keyless_digest(path);
  } catch (const Error&) {
  }
  if (keyless) return {Digest{digest_sha256, keyless->sha256}, keyless->size};
  ChunkReader reader(path);
  Hasher hasher(HashAlg::sha256);
  std::uint64_t size = 0;
  for (auto chunk = reader.next(); !chunk.empty(); chunk = reader.next()) {
    hasher.update(chunk);
    size += chunk.size();
  }
  return {Digest{digest_sha256, hasher.finish()}, size};
}

using cbor::wrap;

Value uuid_value(const Json& j, const std::string& field) {
  if (!j.is_string()) throw description_error(field, "expected a UUID string");
  return Value::byte_string(parse_uuid(j.get<std::string>()));
}

// SUIT_Text_Map from "description": {lang: {manifest texts}} and each component's "description".
Value text_map(const Json& description, const std::vector<Component>& components) {
  static const std::pair<const char*, std::int64_t> manifest_texts[] = {
      {"manifest-description", 1}, {"update-description", 2}, {"manifest-json-source", 3}, {"manifest-yaml-source", 4}};
  // The draft's generator carries these component texts (example 2 shows vendor-domain and description).
  static const std::pair<const char*, std::int64_t> component_texts[] = {
      {"vendor-name", 1}, {"model-name", 2}, {"vendor-domain", 3}, {"component-description", 5}};
  Value out = Value::map();
  for (const auto& [lang, texts] : description.items()) {
    Value lmap = Value::map();
    for (const auto& [name, key] : manifest_texts)
      if (texts.contains(name))
        lmap.entries.emplace_back(Value::integer(key), Value::text_string(texts[name].get<std::string>()));
    for (const auto& c : components) {
      const Json& cd = c.json->value("description", Json::object());
      if (!cd.contains(lang)) continue;
      Value ctexts = Value::map();
      for (const auto& [name, key] : component_texts)
        if (cd[lang].contains(name))
          ctexts.entries.emplace_back(Value::integer(key), Value::text_string(cd[lang][name].get<std::string>()));
      if (!ctexts.entries.empty()) lmap.entries.emplace_back(c.install_id, std::move(ctexts));
    }
    out.entries.emplace_back(Value::text_string(lang), std::move(lmap));
  }
  return out;
}

}  // namespace

Bytes vendor_id_from_domain(std::string_view domain) {
  static const Bytes dns_namespace = from_hex("6ba7b8109dad11d180b400c04fd430c8");
  return uuid5(dns_namespace, domain);
}

Bytes class_id_from_name(ByteView vendor_id, std::string_view name) {
  return uuid5(vendor_id, name);
}

Envelope compile_description(const Json& m, const std::filesystem::path& base_dir) {
  if (!m.is_object() || !m.contains("components") || !m["components"].is_array() || m["components"].empty())
    throw description_error("components", "at least one component is required");

  // Every component id in order of first use: install, download, load.
  std::vector<Value> ids;
  auto index_of = [&](const Value& id) {
    return static_cast<std::size_t>(std::find(ids.begin(), ids.end(), id) - ids.begin());
  };
  std::vector<Component> components;
  for (std::size_t i = 0; i < m["components"].size(); ++i) {
    const Json& c = m["components"][i];
    std::string where = fmt::format("components[{}]", i);
    if (!c.contains("install-id")) throw description_error(where, "\"install-id\" is required");
    for (const char* f : {"install-id", "download-id", "load-id"}) {
      if (!c.contains(f)) continue;
      Value id = component_id(c[f], where + "." + f);
      if (index_of(id) == ids.size()) ids.push_back(id);
    }
    Component comp{&c, component_id(c["install-id"], where + ".install-id"), {}, std::nullopt};
    if (c.contains("file")) {
      std::filesystem::path file = c["file"].get<std::string>();
      auto [dgst, size] = hash_file(file.is_absolute() ? file : base_dir / file);
      comp.install_digest = dgst;
      comp.install_size = size;
    } else {
      comp.install_digest = digest_field(c, "install-digest", where);
      if (c.contains("install-size")) comp.install_size = c["install-size"].get<std::uint64_t>();
    }
    components.push_back(std::move(comp));
  }
  // Components sharing an install-id are alternatives (slots), tried in turn.
  std::vector<std::vector<const Component*>> groups;
  for (const auto& c : components) {
    auto g =
        std::find_if(groups.begin(), groups.end(), [&](const auto& grp) { return grp[0]->install_id == c.install_id; });
    if (g == groups.end())
      groups.push_back({&c});
    else
      g->push_back(&c);
  }
  const bool several = ids.size() > 1;
  auto digest_and_size = [](const Digest& d, std::optional<std::uint64_t> size) {
    Value p = Value::map();
    p.set(parameter::image_digest, wrap(digest_value(d)));
    if (size) p.set(parameter::image_size, Value::uint(*size));
    return p;
  };
  auto slot_choice = [&](const Component& c, Value then) {
    SequenceBuilder s(false);
    Value slot = Value::map();
    slot.set(parameter::slot, Value::uint(c.json->value("slot", 0u)));
    s.override_parameters(std::move(slot));
    s.add(command::component_slot, Value::uint(report_on_failure));
    s.override_parameters(std::move(then));
    return wrap(s.value());
  };

  // Compatibility check and image digests: the shared sequence.
  SequenceBuilder shared(several);
  for (const auto& group : groups) {
    const Component& first = *group[0];
    shared.select(index_of(first.install_id));
    Value identity = Value::map();
    if (first.json->contains("vendor-id"))
      identity.set(parameter::vendor_id, uuid_value((*first.json)["vendor-id"], "vendor-id"));
    if (first.json->contains("class-id"))
      identity.set(parameter::class_id, uuid_value((*first.json)["class-id"], "class-id"));
    if (group.size() == 1) {
      Value params = digest_and_size(first.install_digest, first.install_size);
      for (auto& entry : identity.entries) params.set(*entry.first.as_int(), entry.second);
      shared.override_parameters(std::move(params));
    } else {
      if (!identity.entries.empty()) shared.override_parameters(identity);
      Value choices = Value::array();
      for (const auto* c : group)
        choices.items.push_back(slot_choice(*c, digest_and_size(c->install_digest, c->install_size)));
      shared.add(command::try_each, std::move(choices));
    }
    if (identity.find(parameter::vendor_id)) shared.add(command::vendor_identifier, Value::uint(report_all));
    if (identity.find(parameter::class_id)) shared.add(command::class_identifier, Value::uint(report_all));
  }

  // Download to a separate component first (install-on-download false), then install.
  SequenceBuilder fetch(several), install(several);
  for (const auto& group : groups) {
    const Component& first = *group[0];
    const Json& c = *first.json;
    if (group.size() > 1) {
      install.select(index_of(first.install_id));
      Value choices = Value::array();
      for (const auto* alt : group) {
        Value uri = Value::map();
        uri.set(parameter::uri, Value::text_string(alt->json->value("uri", "")));
        choices.items.push_back(slot_choice(*alt, std::move(uri)));
      }
      install.add(command::try_each, std::move(choices));
      install.add(command::fetch, Value::uint(report_on_success));
      install.add(command::image_match, Value::uint(report_all));
      continue;
    }
    if (!c.contains("uri")) continue;
    if (c.value("install-on-download", true)) {
      install.select(index_of(first.install_id));
      Value uri = Value::map();
      uri.set(parameter::uri, Value::text_string(c["uri"].get<std::string>()));
      install.override_parameters(std::move(uri));
      install.add(command::fetch, Value::uint(report_on_success));
      install.add(command::image_match, Value::uint(report_all));
    } else {
      if (!c.contains("download-id"))
        throw description_error("download-id", "required when install-on-download is false");
      Value download_id = component_id(c["download-id"], "download-id");
      fetch.select(index_of(download_id));
      Digest download_digest =
          c.contains("download-digest") ? digest_field(c, "download-digest", "component") : first.install_digest;
      Value params = Value::map();
      params.set(parameter::image_digest, wrap(digest_value(download_digest)));
      params.set(parameter::uri, Value::text_string(c["uri"].get<std::string>()));
      fetch.override_parameters(std::move(params));
      fetch.add(command::fetch, Value::uint(report_on_success));
      fetch.add(command::image_match, Value::uint(report_all));

      install.select(index_of(first.install_id));
      Value source = Value::map();
      source.set(parameter::source_component, Value::uint(index_of(download_id)));
      install.override_parameters(std::move(source));
      install.add(command::copy, Value::uint(report_on_success));
      install.add(command::image_match, Value::uint(report_all));
    }
  }

  // Secure boot: validate every installed image, load the loadable ones, invoke the bootable one.
  SequenceBuilder validate(several), load(several), invoke(several);
  for (const auto& group : groups) {
    validate.select(index_of(group[0]->install_id));
    validate.add(command::image_match, Value::uint(report_all));
  }
  std::vector<const Component*> bootable;
  for (const auto& c : components) {
    if (c.json->value("bootable", false)) bootable.push_back(&c);
    if (!c.json->value("loadable", false)) continue;
    if (!c.json->contains("load-id")) throw description_error("load-id", "required for a loadable component");
    Value load_id = component_id((*c.json)["load-id"], "load-id");
    load.select(index_of(load_id));
    Digest load_digest =
        c.json->contains("load-digest") ? digest_field(*c.json, "load-digest", "component") : c.install_digest;
    std::optional<std::uint64_t> load_size = c.install_size;
    if (c.json->contains("load-size")) load_size = (*c.json)["load-size"].get<std::uint64_t>();
    Value params = digest_and_size(load_digest, load_size);
    params.set(parameter::source_component, Value::uint(index_of(c.install_id)));
    load.override_parameters(std::move(params));
    load.add(command::copy, Value::uint(report_on_success));
    load.add(command::image_match, Value::uint(report_all));
  }
  // Several bootable alternatives would need a try-each on conditions the description cannot express;
  // like the reference generator, only a single bootable component gets an invoke sequence.
  if (bootable.size() == 1) {
    const Json& c = *bootable[0]->json;
    Value run_id = c.value("loadable", false) ? component_id(c["load-id"], "load-id") : bootable[0]->install_id;
    invoke.select(index_of(run_id));
    invoke.add(command::invoke, Value::uint(report_on_success));
  }

  Value common = Value::map();
  common.set(common_key::components, Value::array(ids));
  common.set(common_key::shared_sequence, wrap(shared.value()));

  Value manifest_value = Value::map();
  manifest_value.set(manifest_key::version, Value::uint(m.value("manifest-version", 1u)));
  if (!m.contains("manifest-sequence-number") || !m["manifest-sequence-number"].is_number_unsigned())
    throw description_error("manifest-sequence-number", "an unsigned integer is required");
  manifest_value.set(manifest_key::sequence_number, Value::uint(m["manifest-sequence-number"].get<std::uint64_t>()));
  manifest_value.set(manifest_key::common, wrap(common));
  if (m.contains("reference-uri"))
    manifest_value.set(manifest_key::reference_uri, Value::text_string(m["reference-uri"].get<std::string>()));
  if (!validate.empty()) manifest_value.set(manifest_key::validate, wrap(validate.value()));
  if (!load.empty()) manifest_value.set(manifest_key::load, wrap(load.value()));
  if (!invoke.empty()) manifest_value.set(manifest_key::invoke, wrap(invoke.value()));

  // Severable members: the manifest keeps their digest, the envelope carries them.
  const bool severable = m.value("severable", false);
  std::vector<std::pair<std::int64_t, Value>> severed;
  auto add_member = [&](std::int64_t key, const Value& content) {
    Value wrapped = wrap(content);
    if (severable) {
      manifest_value.set(key, digest_value(compute_wrapped_digest(digest_sha256, wrapped.bytes)));
      severed.emplace_back(key, std::move(wrapped));
    } else {
      manifest_value.set(key, std::move(wrapped));
    }
  };
  if (!fetch.empty()) add_member(manifest_key::payload_fetch, fetch.value());
  if (!install.empty()) add_member(manifest_key::install, install.value());
  if (m.contains("description")) add_member(manifest_key::text, text_map(m["description"], components));

  Envelope envelope;
  set_manifest(envelope, manifest_value);
  for (auto& [key, value] : severed) envelope.members.set(key, std::move(value));
  return envelope;
}

Envelope create_envelope(const Json& description, const std::filesystem::path& base_dir,
                         const std::vector<const Signer*>& signers) {
  Envelope envelope = compile_description(description, base_dir);
  for (const Signer* signer : signers) add_signature(envelope, *signer);
  return envelope;
}

Json describe(const CreateOptions& options) {
  if (options.components.empty())
    throw Error(ExitCode::usage, "no --component given", "name at least one signed image file");
  if (options.vendor_id.size() != 16)
    throw Error(ExitCode::usage, "a vendor id is required", "pass --vendor-id UUID or --vendor-domain NAME");
  Json description = Json::object();
  Json components = Json::array();
  for (std::size_t i = 0; i < options.components.size(); ++i) {
    const auto& c = options.components[i];
    Json component = Json::object();
    component["install-id"] = Json::array({to_hex(Bytes{static_cast<std::uint8_t>(i)})});
    component["file"] = c.image.string();
    if (!c.uri.empty()) component["uri"] = c.uri;
    if (i == 0) {
      component["vendor-id"] = uuid_string(options.vendor_id);
      if (!options.class_id.empty()) component["class-id"] = uuid_string(options.class_id);
      component["bootable"] = true;
      Json texts = Json::object();
      if (!options.vendor_name.empty()) texts["vendor-name"] = options.vendor_name;
      if (!options.model_name.empty()) texts["model-name"] = options.model_name;
      if (!options.vendor_domain.empty()) texts["vendor-domain"] = options.vendor_domain;
      if (!options.component_description.empty()) texts["component-description"] = options.component_description;
      if (!texts.empty()) component["description"] = Json{{"en-US", texts}};
    }
    components.push_back(component);
  }
  description["components"] = components;
  description["manifest-version"] = 1;
  description["manifest-sequence-number"] = options.sequence_number;
  if (!options.reference_uri.empty()) description["reference-uri"] = options.reference_uri;
  Json texts = Json::object();
  if (!options.manifest_description.empty()) texts["manifest-description"] = options.manifest_description;
  if (!options.update_description.empty()) texts["update-description"] = options.update_description;
  bool component_texts = components[0].contains("description");
  if (!texts.empty() || component_texts) description["description"] = Json{{"en-US", texts}};
  if (options.severable) description["severable"] = true;
  return description;
}

std::uint64_t parse_sequence_number(const std::string& text, std::uint64_t now_seconds) {
  if (text == "auto") return now_seconds;
  std::uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size())
    throw Error(ExitCode::usage, fmt::format("--sequence {} is not a number", text),
                "pass an unsigned integer or \"auto\"");
  return n;
}

nlohmann::ordered_json describe_request(CreateRequest r, std::uint64_t now_seconds) {
  if (r.sequence.empty()) throw Error(ExitCode::usage, "--sequence is required", "pass --sequence N or --sequence auto");
  if (!r.uris.empty() && r.uris.size() != r.components.size())
    throw Error(ExitCode::usage, fmt::format("{} --uri for {} --component", r.uris.size(), r.components.size()),
                "give one --uri per --component, in the same order, or none");
  CreateOptions& o = r.options;
  // Text goes into CBOR text strings, which must be UTF-8 (a parser, kiln's own too, refuses the envelope).
  const std::pair<const char*, const std::string*> texts[] = {
      {"--reference-uri", &o.reference_uri},   {"--description", &o.manifest_description},
      {"--update-description", &o.update_description}, {"--vendor-name", &o.vendor_name},
      {"--model-name", &o.model_name},         {"--component-description", &o.component_description},
      {"--vendor-domain", &r.vendor_domain},   {"--class-name", &r.class_name}};
  for (const auto& text : texts)
    if (!is_utf8(*text.second))
      throw Error(ExitCode::usage, fmt::format("{} is not UTF-8 text", text.first), "pass the text in UTF-8");
  for (const auto& uri : r.uris)
    if (!is_utf8(uri)) throw Error(ExitCode::usage, "--uri is not UTF-8 text", "pass the URI in UTF-8");
  for (std::size_t i = 0; i < r.components.size(); ++i)
    o.components.push_back({r.components[i], r.uris.empty() ? "" : r.uris[i]});
  // Identity: an explicit UUID, or the draft's UUIDv5 derivation from a domain / model name.
  if (!r.vendor_id.empty()) o.vendor_id = parse_uuid(r.vendor_id);
  if (!r.vendor_domain.empty()) o.vendor_id = vendor_id_from_domain(r.vendor_domain);
  if (!r.class_id.empty()) o.class_id = parse_uuid(r.class_id);
  if (!r.class_name.empty()) {
    if (o.vendor_id.empty())
      throw Error(ExitCode::usage, "--class-name needs a vendor", "pass --vendor-id or --vendor-domain");
    o.class_id = class_id_from_name(o.vendor_id, r.class_name);
  }
  if (o.vendor_domain.empty()) o.vendor_domain = r.vendor_domain;
  o.sequence_number = parse_sequence_number(r.sequence, now_seconds);
  return describe(o);
}

}  // namespace kiln::suit
