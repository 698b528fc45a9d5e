// Term: an owning metadata value (Erlang term subset) for building events to encode and for
// comparing decoded ones in tests and tools. Allocates; not for the packet path.
// Thread-safety: a value type.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "telemetryd/wire/event.h"

namespace telemetryd::wire {

struct Term {
  ValueKind kind = ValueKind::kNil;
  bool bool_value = false;
  std::int64_t int_value = 0;
  double float_value = 0.0;
  std::string text;         // kString, kAtom, kBytes
  std::vector<Term> items;  // kList, kTuple; kMap: key, value, key, value ...

  static Term Nil() { return Term{}; }
  static Term Bool(bool v);
  static Term Int(std::int64_t v);
  static Term Float(double v);
  static Term String(std::string v);
  static Term Atom(std::string v);
  static Term Bytes(std::string v);
  static Term List(std::vector<Term> v);
  static Term Tuple(std::vector<Term> v);
  static Term Map(std::vector<std::pair<Term, Term>> pairs);

  friend bool operator==(const Term& a, const Term& b);
};

// Deep copy of a decoded value.
Term ToTerm(const Value& value);
// Erlang-like text: nil, true, 12, 1.5, "text", :atom, <<bytes as hex>>, [..], {..}, %{k => v}.
std::string ToText(const Term& term);

}  // namespace telemetryd::wire
