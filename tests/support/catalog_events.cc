#include "catalog_events.h"

#include <map>
#include <string>

namespace telemetryd::test {
namespace {

wire::Term ValueFor(aggregate::MetadataType type, const std::string& key, int span_id) {
  using aggregate::MetadataType;
  switch (type) {
    case MetadataType::kString:
      return wire::Term::String("s_" + key);
    case MetadataType::kAtom:
      return wire::Term::Atom("a_" + key);
    case MetadataType::kInteger:
      return wire::Term::Int(7);
    case MetadataType::kFloat:
      return wire::Term::Float(1.5);
    case MetadataType::kBoolean:
      return wire::Term::Bool(true);
    case MetadataType::kMap:
      return wire::Term::Map({{wire::Term::Atom("k"), wire::Term::Int(1)}});
    case MetadataType::kList:
      return wire::Term::List({wire::Term::Int(1)});
    case MetadataType::kReference:
      return wire::Term::Bytes("ref-" + std::to_string(span_id));
    case MetadataType::kAny:
      return wire::Term::String("any");
  }
  return wire::Term::Nil();
}

}  // namespace

std::size_t SendEveryCatalogEvent(client::Client& client,
                                  const std::vector<aggregate::CatalogSpec>& catalogs) {
  std::size_t sent = 0;
  std::map<std::string, int> span_ids;
  for (const int pass : {0, 1, 2}) {
    for (const auto& catalog : catalogs) {
      for (const auto& event : catalog.events) {
        const int want = event.span == aggregate::SpanRole::kStart  ? 0
                         : event.span == aggregate::SpanRole::kNone ? 2
                                                                    : 1;
        if (want != pass) continue;
        const std::string prefix = event.name.substr(0, event.name.rfind('.'));
        if (span_ids.count(prefix) == 0) span_ids[prefix] = static_cast<int>(span_ids.size());
        wire::EventRecord record;
        record.name = event.name;
        for (const auto& [key, unit] : event.measurements) {
          std::int64_t value = 2;
          if (key == "monotonic_time") value = pass == 0 ? 1'000'000'000 : 4'000'000'000;
          if (key == "duration" && event.name == "vsr.leadership.stop") value = 0;
          record.measurements.emplace_back(key, wire::Number::Int(value));
        }
        for (const auto& [key, type] : event.metadata) {
          record.metadata.emplace_back(key, ValueFor(type, key, span_ids[prefix]));
        }
        if (client.Send(record)) ++sent;
      }
    }
  }
  return client.Flush() ? sent : 0;
}

}  // namespace telemetryd::test
