#include "telemetryd/wire/term.h"

#include <charconv>
#include <cstdio>

namespace telemetryd::wire {

Term Term::Bool(bool v) {
  Term t;
  t.kind = ValueKind::kBool;
  t.bool_value = v;
  return t;
}
Term Term::Int(std::int64_t v) {
  Term t;
  t.kind = ValueKind::kInt;
  t.int_value = v;
  return t;
}
Term Term::Float(double v) {
  Term t;
  t.kind = ValueKind::kFloat;
  t.float_value = v;
  return t;
}
namespace {
Term TextTerm(ValueKind kind, std::string v) {
  Term t;
  t.kind = kind;
  t.text = std::move(v);
  return t;
}
Term ItemsTerm(ValueKind kind, std::vector<Term> v) {
  Term t;
  t.kind = kind;
  t.items = std::move(v);
  return t;
}
}  // namespace
Term Term::String(std::string v) { return TextTerm(ValueKind::kString, std::move(v)); }
Term Term::Atom(std::string v) { return TextTerm(ValueKind::kAtom, std::move(v)); }
Term Term::Bytes(std::string v) { return TextTerm(ValueKind::kBytes, std::move(v)); }
Term Term::List(std::vector<Term> v) { return ItemsTerm(ValueKind::kList, std::move(v)); }
Term Term::Tuple(std::vector<Term> v) { return ItemsTerm(ValueKind::kTuple, std::move(v)); }
Term Term::Map(std::vector<std::pair<Term, Term>> pairs) {
  std::vector<Term> items;
  items.reserve(pairs.size() * 2);
  for (auto& [k, v] : pairs) {
    items.push_back(std::move(k));
    items.push_back(std::move(v));
  }
  return ItemsTerm(ValueKind::kMap, std::move(items));
}

bool operator==(const Term& a, const Term& b) {
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case ValueKind::kNil:
      return true;
    case ValueKind::kBool:
      return a.bool_value == b.bool_value;
    case ValueKind::kInt:
      return a.int_value == b.int_value;
    case ValueKind::kFloat:
      return a.float_value == b.float_value;
    case ValueKind::kString:
    case ValueKind::kAtom:
    case ValueKind::kBytes:
      return a.text == b.text;
    case ValueKind::kList:
    case ValueKind::kTuple:
    case ValueKind::kMap:
      return a.items == b.items;
  }
  return false;
}

Term ToTerm(const Value& value) {
  Term t;
  t.kind = value.kind;
  t.bool_value = value.bool_value;
  t.int_value = value.int_value;
  t.float_value = value.float_value;
  if (value.kind == ValueKind::kString || value.kind == ValueKind::kAtom ||
      value.kind == ValueKind::kBytes) {
    t.text = std::string(value.text);
  }
  if (value.IsContainer()) {
    ValueReader reader(value);
    Value element;
    while (reader.Next(element)) t.items.push_back(ToTerm(element));
  }
  return t;
}

namespace {

void AppendQuoted(std::string& out, std::string_view text) {
  out.push_back('"');
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X",
                    static_cast<unsigned>(static_cast<unsigned char>(c)));
      out += buf;
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
}

void AppendText(std::string& out, const Term& t) {
  switch (t.kind) {
    case ValueKind::kNil:
      out += "nil";
      return;
    case ValueKind::kBool:
      out += t.bool_value ? "true" : "false";
      return;
    case ValueKind::kInt:
      out += std::to_string(t.int_value);
      return;
    case ValueKind::kFloat: {
      char buf[32];
      const auto r = std::to_chars(buf, buf + sizeof buf, t.float_value);
      std::string_view s(buf, static_cast<std::size_t>(r.ptr - buf));
      out += s;
      if (s.find_first_of(".eEn") == std::string_view::npos) out += ".0";
      return;
    }
    case ValueKind::kString:
      AppendQuoted(out, t.text);
      return;
    case ValueKind::kAtom:
      out.push_back(':');
      out += t.text;
      return;
    case ValueKind::kBytes: {
      out += "<<";
      for (const char c : t.text) {
        char buf[4];
        std::snprintf(buf, sizeof buf, "%02x",
                      static_cast<unsigned>(static_cast<unsigned char>(c)));
        out += buf;
      }
      out += ">>";
      return;
    }
    case ValueKind::kList:
    case ValueKind::kTuple: {
      out += t.kind == ValueKind::kList ? "[" : "{";
      for (std::size_t i = 0; i < t.items.size(); ++i) {
        if (i != 0) out += ", ";
        AppendText(out, t.items[i]);
      }
      out += t.kind == ValueKind::kList ? "]" : "}";
      return;
    }
    case ValueKind::kMap: {
      out += "%{";
      for (std::size_t i = 0; i + 1 < t.items.size(); i += 2) {
        if (i != 0) out += ", ";
        AppendText(out, t.items[i]);
        out += " => ";
        AppendText(out, t.items[i + 1]);
      }
      out += "}";
      return;
    }
  }
}

}  // namespace

std::string ToText(const Term& term) {
  std::string out;
  AppendText(out, term);
  return out;
}

}  // namespace telemetryd::wire
