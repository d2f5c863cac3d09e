// Rollout controls to and from JSON (service/rollout_policy.hpp).
#include "core/time.hpp"
#include "service/rollout_policy.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "service/handlers.hpp"

namespace kiln::service {
namespace {

using OJson = nlohmann::ordered_json;

ApiError bad(const std::string& field, const std::string& what) {
  return ApiError{400, "invalid_request", fmt::format("field '{}' {}", field, what)};
}

const OJson* member(const OJson& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

// Only the named members: a misspelt one is refused rather than ignored.
void known_members(const OJson& object, const std::string& field, std::initializer_list<const char*> names) {
  for (auto& item : object.items()) {
    const std::string& key = item.key();
    bool known = std::any_of(names.begin(), names.end(), [&](const char* n) { return key == n; });
    if (!known) throw bad(field + "." + key, "is not a known member");
  }
}

double percent_of(const OJson& v, const std::string& field) {
  if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() < 0 || v.get<double>() > 100)
    throw bad(field, "must be a percentage 0..100");
  return v.get<double>();
}

std::int64_t count_of(const OJson& v, const std::string& field, std::int64_t low, std::int64_t high) {
  if (!v.is_number_integer() || v.get<std::int64_t>() < low || v.get<std::int64_t>() > high)
    throw bad(field, fmt::format("must be a whole number {}..{}", low, high));
  return v.get<std::int64_t>();
}

}  // namespace

OJson policy_json(const RolloutPolicy& p) {
  OJson out = OJson::object();
  auto& w = p.wave;
  out["wave_success"] =
      w.success_percent ? OJson{{"percent", *w.success_percent}, {"then", w.pause_on_success ? "pause" : "next"}}
                        : OJson(nullptr);
  out["wave_error"] = w.error_count     ? OJson{{"count", *w.error_count}}
                      : w.error_percent ? OJson{{"percent", *w.error_percent}}
                                        : OJson(nullptr);
  OJson abort = OJson::array();
  for (auto& c : p.abort)
    abort.push_back(OJson{{"kind", c.kind}, {"percent", c.percent}, {"min_executed", c.min_executed}});
  out["abort_criteria"] = abort;
  auto& r = p.rate;
  if (r.base_per_minute > 0) {
    OJson rate = {{"base_per_minute", r.base_per_minute}, {"factor", r.factor},
                  {"increase_on", r.on_succeeded ? "succeeded" : "notified"}, {"every", r.every}};
    rate["max_per_minute"] = r.max_per_minute > 0 ? OJson(r.max_per_minute) : OJson(nullptr);
    out["rate"] = rate;
  } else {
    out["rate"] = nullptr;
  }
  if (p.start_at > 0 || !p.windows.empty()) {
    OJson schedule = {{"start_at", p.start_at > 0 ? OJson(iso8601(p.start_at)) : OJson(nullptr)}};
    if (!p.windows.empty()) {
      OJson windows = OJson::array();
      for (auto& window : p.windows) windows.push_back(maintenance_window_text(window));
      schedule["windows"] = windows;
      schedule["time_zone"] = p.time_zone.empty() ? "UTC" : p.time_zone;
    }
    out["schedule"] = schedule;
  } else {
    out["schedule"] = nullptr;
  }
  out["retry"] = p.retry.retries > 0 ? OJson{{"retries", p.retry.retries},
                                             {"backoff_seconds", p.retry.backoff},
                                             {"backoff_max_seconds", p.retry.backoff_max}}
                                     : OJson(nullptr);
  auto& t = p.timeouts;
  if (t == Timeouts{}) {
    out["timeouts"] = nullptr;
  } else {
    OJson timeouts = OJson::object();
    if (t.downloading) timeouts["downloading"] = t.downloading;
    if (t.installing) timeouts["installing"] = t.installing;
    if (t.testing) timeouts["testing"] = t.testing;
    out["timeouts"] = timeouts;
  }
  return out;
}

RolloutPolicy parse_policy(const OJson& body) {
  RolloutPolicy p;
  if (auto* v = member(body, "wave_success")) {
    if (!v->is_object()) throw bad("wave_success", "must be an object {\"percent\": 90, \"then\": \"next\"}");
    known_members(*v, "wave_success", {"percent", "then"});
    auto* percent = member(*v, "percent");
    if (!percent) throw bad("wave_success.percent", "is required (the share of a wave's devices installed)");
    p.wave.success_percent = percent_of(*percent, "wave_success.percent");
    if (auto* then = member(*v, "then")) {
      if (!then->is_string() || (*then != "next" && *then != "pause"))
        throw bad("wave_success.then", "must be \"next\" (open the next wave) or \"pause\" (wait for a resume)");
      p.wave.pause_on_success = *then == "pause";
    }
  }
  if (auto* v = member(body, "wave_error")) {
    if (!v->is_object()) throw bad("wave_error", "must be an object {\"count\": N} or {\"percent\": P}");
    known_members(*v, "wave_error", {"count", "percent"});
    auto* count = member(*v, "count");
    auto* percent = member(*v, "percent");
    if ((count != nullptr) == (percent != nullptr))
      throw bad("wave_error", "takes exactly one of count (devices) and percent (share of the wave)");
    if (count) p.wave.error_count = count_of(*count, "wave_error.count", 0, 1000000);
    if (percent) p.wave.error_percent = percent_of(*percent, "wave_error.percent");
  }
  if (auto* v = member(body, "abort_criteria")) {
    if (!v->is_array() || v->size() > 16) throw bad("abort_criteria", "must be an array of at most 16 criteria");
    for (std::size_t i = 0; i < v->size(); ++i) {
      auto field = fmt::format("abort_criteria[{}]", i);
      auto& c = (*v)[i];
      if (!c.is_object()) throw bad(field, "must be an object {\"kind\", \"percent\", \"min_executed\"}");
      known_members(c, field, {"kind", "percent", "min_executed"});
      AbortCriterion criterion;
      auto* kind = member(c, "kind");
      auto& kinds = failure_kinds();
      if (!kind || !kind->is_string() || std::find(kinds.begin(), kinds.end(), kind->get<std::string>()) == kinds.end())
        throw bad(field + ".kind", "must be one of failed, refused, rolled_back, timed_out");
      criterion.kind = kind->get<std::string>();
      auto* percent = member(c, "percent");
      if (!percent) throw bad(field + ".percent", "is required (the share of executed devices)");
      criterion.percent = percent_of(*percent, field + ".percent");
      criterion.min_executed = default_abort_min_executed;
      if (auto* min = member(c, "min_executed")) criterion.min_executed = count_of(*min, field + ".min_executed", 1, 1000000);
      bool repeated = std::any_of(p.abort.begin(), p.abort.end(),
                                  [&](const AbortCriterion& a) { return a.kind == criterion.kind; });
      if (repeated) throw bad(field + ".kind", fmt::format("names {} a second time", criterion.kind));
      p.abort.push_back(criterion);
    }
  }
  if (auto* v = member(body, "timeouts")) {
    if (!v->is_object() || v->empty())
      throw bad("timeouts", "must be an object of seconds per phase: {\"downloading\": 600, \"installing\": 600, "
                            "\"testing\": 300}");
    known_members(*v, "timeouts", {"downloading", "installing", "testing"});
    auto seconds = [&](const char* name) -> std::int64_t {
      auto* s = member(*v, name);
      return s ? count_of(*s, std::string("timeouts.") + name, 1, 7 * 86400) : 0;
    };
    p.timeouts = {seconds("downloading"), seconds("installing"), seconds("testing")};
  }
  if (auto* v = member(body, "rate")) {
    if (!v->is_object())
      throw bad("rate", "must be an object {\"base_per_minute\": 10, \"factor\": 2, \"increase_on\": "
                        "\"notified\", \"every\": 50}");
    known_members(*v, "rate", {"base_per_minute", "factor", "increase_on", "every", "max_per_minute"});
    auto* base = member(*v, "base_per_minute");
    if (!base) throw bad("rate.base_per_minute", "is required (devices per minute, 1..1000)");
    p.rate.base_per_minute = count_of(*base, "rate.base_per_minute", 1, 1000);
    if (auto* f = member(*v, "factor")) {
      if (!f->is_number() || !std::isfinite(f->get<double>()) || f->get<double>() < 1 || f->get<double>() > 5)
        throw bad("rate.factor", "must be a number 1..5 (the rate is multiplied by it at each raise)");
      p.rate.factor = f->get<double>();
    }
    if (auto* on = member(*v, "increase_on")) {
      if (!on->is_string() || (*on != "notified" && *on != "succeeded"))
        throw bad("rate.increase_on", "must be \"notified\" or \"succeeded\"");
      p.rate.on_succeeded = *on == "succeeded";
    }
    if (auto* every = member(*v, "every")) p.rate.every = count_of(*every, "rate.every", 1, 1000000);
    if (p.rate.factor > 1 && p.rate.every == 0)
      throw bad("rate.every", "is required with a factor above 1 (raise the rate each time this many devices ...)");
    if (auto* max = member(*v, "max_per_minute")) {
      p.rate.max_per_minute = count_of(*max, "rate.max_per_minute", 1, 1000);
      if (p.rate.max_per_minute < p.rate.base_per_minute)
        throw bad("rate.max_per_minute", "must not be below rate.base_per_minute");
    }
  }
  if (auto* v = member(body, "schedule")) {
    if (!v->is_object())
      throw bad("schedule", "must be an object {\"start_at\": \"2026-12-24T02:00:00Z\", \"windows\": [\"Mon-Fri "
                            "01:00-04:00\"], \"time_zone\": \"Europe/Berlin\"}");
    known_members(*v, "schedule", {"start_at", "windows", "time_zone"});
    if (auto* start = member(*v, "start_at")) {
      auto at = start->is_string() ? unix_seconds(start->get<std::string>()) : std::nullopt;
      if (!at || *at <= 0)
        throw bad("schedule.start_at", "must be a time with its zone, e.g. 2026-12-24T02:00:00Z or 2026-12-24T03:00:00+01:00");
      p.start_at = *at;
    }
    if (auto* zone = member(*v, "time_zone")) {
      if (!zone->is_string() || zone->get<std::string>().size() > 64 || !known_time_zone(zone->get<std::string>()))
        throw bad("schedule.time_zone", "must be a time zone of the service's database, an IANA name such as UTC or "
                                        "Europe/Berlin");
      p.time_zone = zone->get<std::string>();
    }
    if (auto* windows = member(*v, "windows")) {
      if (!windows->is_array() || windows->empty() || windows->size() > 16)
        throw bad("schedule.windows", "must be an array of 1..16 windows such as \"Mon-Fri 01:00-04:00\"");
      for (std::size_t i = 0; i < windows->size(); ++i) {
        auto field = fmt::format("schedule.windows[{}]", i);
        auto& w = (*windows)[i];
        if (!w.is_string() || w.get<std::string>().size() > 64) throw bad(field, "must be a window such as \"Mon-Fri 01:00-04:00\"");
        std::string why;
        auto parsed = parse_maintenance_window(w.get<std::string>(), why);
        if (!parsed) throw bad(field, "is not a window: " + why);
        if (!next_window_open({*parsed}, p.time_zone.empty() ? "UTC" : p.time_zone, unix_now()))
          throw bad(field, fmt::format("never opens in {}", p.time_zone.empty() ? "UTC" : p.time_zone));
        p.windows.push_back(*parsed);
      }
      if (p.time_zone.empty()) p.time_zone = "UTC";
    } else if (!p.time_zone.empty()) {
      throw bad("schedule.time_zone", "is for maintenance windows: give schedule.windows too");
    }
  }
  if (auto* v = member(body, "retry")) {
    if (!v->is_object())
      throw bad("retry", "must be an object {\"retries\": 3, \"backoff_seconds\": 30, \"backoff_max_seconds\": 600}");
    known_members(*v, "retry", {"retries", "backoff_seconds", "backoff_max_seconds"});
    auto* retries = member(*v, "retries");
    if (!retries) throw bad("retry.retries", "is required (attempts after the first, 1..10)");
    p.retry.retries = count_of(*retries, "retry.retries", 1, 10);
    p.retry.backoff = default_retry_backoff;
    if (auto* b = member(*v, "backoff_seconds")) p.retry.backoff = count_of(*b, "retry.backoff_seconds", 1, 86400);
    p.retry.backoff_max = std::max(default_retry_backoff_max, p.retry.backoff);
    if (auto* m = member(*v, "backoff_max_seconds")) {
      p.retry.backoff_max = count_of(*m, "retry.backoff_max_seconds", 1, 7 * 86400);
      if (p.retry.backoff_max < p.retry.backoff)
        throw bad("retry.backoff_max_seconds", "must not be below retry.backoff_seconds");
    }
  }
  return p;
}

std::string policy_text(const RolloutPolicy& policy) { return policy_json(policy).dump(); }

RolloutPolicy policy_from_text(const std::string& text) {
  if (text.empty()) return {};
  auto j = OJson::parse(text);
  RolloutPolicy p;
  if (auto* w = member(j, "wave_success")) {
    p.wave.success_percent = (*w)["percent"].get<double>();
    p.wave.pause_on_success = w->value("then", std::string("next")) == "pause";
  }
  if (auto* w = member(j, "wave_error")) {
    if (auto* c = member(*w, "count")) p.wave.error_count = c->get<std::int64_t>();
    if (auto* c = member(*w, "percent")) p.wave.error_percent = c->get<double>();
  }
  if (auto* a = member(j, "abort_criteria"))
    for (auto& c : *a)
      p.abort.push_back({c["kind"].get<std::string>(), c["percent"].get<double>(), c["min_executed"].get<std::int64_t>()});
  if (auto* r = member(j, "rate")) {
    p.rate.base_per_minute = (*r)["base_per_minute"].get<std::int64_t>();
    p.rate.factor = r->value("factor", 1.0);
    p.rate.on_succeeded = r->value("increase_on", std::string("notified")) == "succeeded";
    p.rate.every = r->value("every", std::int64_t{0});
    if (auto* m = member(*r, "max_per_minute")) p.rate.max_per_minute = m->get<std::int64_t>();
  }
  if (auto* s = member(j, "schedule")) {
    if (auto* start = member(*s, "start_at")) p.start_at = unix_seconds(start->get<std::string>()).value_or(0);
    if (auto* windows = member(*s, "windows"))
      for (auto& w : *windows) {
        std::string why;
        if (auto parsed = parse_maintenance_window(w.get<std::string>(), why)) p.windows.push_back(*parsed);
      }
    if (!p.windows.empty()) p.time_zone = s->value("time_zone", std::string("UTC"));
  }
  if (auto* r = member(j, "retry"))
    p.retry = {(*r)["retries"].get<std::int64_t>(), (*r)["backoff_seconds"].get<std::int64_t>(),
               (*r)["backoff_max_seconds"].get<std::int64_t>()};
  if (auto* t = member(j, "timeouts"))
    p.timeouts = {t->value("downloading", std::int64_t{0}), t->value("installing", std::int64_t{0}),
                  t->value("testing", std::int64_t{0})};
  return p;
}

std::string progress_text(const Rollout& r) {
  OJson j = OJson::object();
  if (r.wave_failure_baseline) j["wave_failure_baseline"] = r.wave_failure_baseline;
  if (r.awaiting_approval) j["awaiting_approval"] = true;
  if (r.pause_reason) j["pause_reason"] = *r.pause_reason;
  if (!r.rate_steps.empty()) {
    OJson steps = OJson::array();
    for (auto& s : r.rate_steps) steps.push_back(OJson::array({s.at, s.level}));
    j["rate_steps"] = steps;
  }
  return j.dump();
}

void read_progress(Rollout& r, const std::string& text) {
  if (text.empty()) return;
  auto j = OJson::parse(text);
  r.wave_failure_baseline = j.value("wave_failure_baseline", std::int64_t{0});
  r.awaiting_approval = j.value("awaiting_approval", false);
  if (auto* reason = member(j, "pause_reason")) r.pause_reason = reason->get<std::string>();
  if (auto* steps = member(j, "rate_steps"))
    for (auto& s : *steps) r.rate_steps.push_back({s[0].get<std::int64_t>(), s[1].get<int>()});
}

}  // namespace kiln::service
