#include "schema.hpp"

#include <c10/util/Exception.h>
#include <yaml-cpp/yaml.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

namespace cac_engine {

namespace {

template <typename T>
std::string yaml_text(const T& value) {
  if constexpr (std::is_same_v<T, bool>) {
    return value ? "true" : "false";
  } else if constexpr (std::is_same_v<T, std::string>) {
    return value.empty() ? "\"\"" : value;
  } else {
    return fmt::format("{}", value);  // shortest round-trip form: 0.35, 1e-08
  }
}

template <typename T>
std::string yaml_list(const std::vector<T>& values) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) out += (i ? ", " : "") + yaml_text(values[i]);
  return out + "]";
}

std::string number_text(double value) { return fmt::format("{}", value); }

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t next = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = row[j];
      row[j] = next;
    }
  }
  return row[b.size()];
}

std::string parent_of(const std::string& key) {
  const auto dot = key.rfind('.');
  return dot == std::string::npos ? "" : key.substr(0, dot);
}

std::string leaf_of(const std::string& key) {
  const auto dot = key.rfind('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

}  // namespace

KeySpec::KeySpec(std::string name_, KeyType type_, std::string doc_)
    : name(std::move(name_)), type(type_), doc(std::move(doc_)) {}

KeySpec& KeySpec::def(bool value) {
  default_text = yaml_text(value);
  return *this;
}
KeySpec& KeySpec::def(int64_t value) {
  default_text = yaml_text(value);
  return *this;
}
KeySpec& KeySpec::def(double value) {
  default_text = yaml_text(value);
  return *this;
}
KeySpec& KeySpec::def(const std::string& value) {
  default_text = yaml_text(value);
  return *this;
}
KeySpec& KeySpec::def(const std::vector<int64_t>& value) {
  default_text = yaml_list(value);
  return *this;
}
KeySpec& KeySpec::def(const std::vector<double>& value) {
  default_text = yaml_list(value);
  return *this;
}
KeySpec& KeySpec::def(const std::vector<std::string>& value) {
  default_text = yaml_list(value);
  return *this;
}
KeySpec& KeySpec::derive(std::string text) {
  derived = std::move(text);
  return *this;
}
KeySpec& KeySpec::require(Requirement requirement) {
  required = requirement;
  return *this;
}
KeySpec& KeySpec::one_of(std::vector<std::string> values) {
  choices = std::move(values);
  return *this;
}
KeySpec& KeySpec::min(double value) {
  lower = Bound{value, true};
  return *this;
}
KeySpec& KeySpec::above(double value) {
  lower = Bound{value, false};
  return *this;
}
KeySpec& KeySpec::max(double value) {
  upper = Bound{value, true};
  return *this;
}
KeySpec& KeySpec::below(double value) {
  upper = Bound{value, false};
  return *this;
}
KeySpec& KeySpec::size(size_t n) {
  length = n;
  return *this;
}
KeySpec& KeySpec::not_empty() {
  non_empty = true;
  return *this;
}

std::string KeySpec::type_text() const {
  const std::string extent = length ? "[" + std::to_string(length) + "]" : "[]";
  switch (type) {
    case KeyType::Boolean: return "bool";
    case KeyType::Integer: return "int";
    case KeyType::Number: return "float";
    case KeyType::String: return "string";
    case KeyType::Integers: return "int" + extent;
    case KeyType::Numbers: return "float" + extent;
    case KeyType::Strings: return "string" + extent;
  }
  return "?";
}

std::string KeySpec::default_doc() const {
  if (required != Requirement::Optional) return required == Requirement::Always ? "required" : "required to train";
  if (!default_text.empty()) return "`" + default_text + "`";
  return derived;
}

std::string KeySpec::allowed_text() const {
  if (!choices.empty()) {
    std::string out = "one of ";
    for (size_t i = 0; i < choices.size(); ++i) out += (i ? ", " : "") + choices[i];
    return out;
  }
  if (lower && upper) {
    return std::string(lower->inclusive ? "[" : "(") + number_text(lower->value) + ", " + number_text(upper->value) +
           (upper->inclusive ? "]" : ")");
  }
  if (lower) return (lower->inclusive ? ">= " : "> ") + number_text(lower->value);
  if (upper) return (upper->inclusive ? "<= " : "< ") + number_text(upper->value);
  return "";
}

bool KeySpec::in_range(double value) const {
  if (lower && !(lower->inclusive ? value >= lower->value : value > lower->value)) return false;
  if (upper && !(upper->inclusive ? value <= upper->value : value < upper->value)) return false;
  return true;
}

namespace {

bool is_list(KeyType type) { return type == KeyType::Integers || type == KeyType::Numbers || type == KeyType::Strings; }

}  // namespace

std::string KeySpec::expected() const {
  const std::string count = length ? std::to_string(length) + " " : "";
  switch (type) {
    case KeyType::Boolean: return "a boolean";
    case KeyType::Integer: return "an integer";
    case KeyType::Number: return "a number";
    case KeyType::String: return "a string";
    case KeyType::Integers: return "a list of " + count + "integers";
    case KeyType::Numbers: return "a list of " + count + "numbers";
    case KeyType::Strings: return "a list of " + count + "strings";
  }
  return "a value";
}

bool scalar_fits(const YAML::Node& node, KeyType type) {
  if (!node.IsScalar()) return false;
  try {
    switch (type) {
      case KeyType::Boolean: node.as<bool>(); return true;
      case KeyType::Integer:
      case KeyType::Integers: node.as<int64_t>(); return true;
      case KeyType::Number:
      case KeyType::Numbers: return std::isfinite(node.as<double>());
      case KeyType::String:
      case KeyType::Strings: return true;
    }
  } catch (const YAML::Exception&) {
  }
  return false;
}

std::string KeySpec::problem(const YAML::Node& value) const {
  const std::string got = " but got " + describe_yaml(value);
  std::vector<YAML::Node> elements;
  if (is_list(type)) {
    if (!value.IsSequence()) return "expected " + expected() + got;
    for (const auto& element : value) elements.push_back(element);
  } else {
    elements.push_back(value);
  }
  for (const auto& element : elements) {
    if (!scalar_fits(element, type)) return "expected " + expected() + got;
  }
  if (length && elements.size() != length) return "expected " + expected() + got;
  if (non_empty && elements.empty()) return "expected a non-empty list" + got;
  const std::string allowed = allowed_text();
  for (const auto& element : elements) {
    const bool numeric = type != KeyType::Boolean && type != KeyType::String && type != KeyType::Strings;
    const bool fits = !choices.empty() ? std::find(choices.begin(), choices.end(), element.Scalar()) != choices.end()
                                       : !numeric || in_range(element.as<double>());
    if (!fits) {
      if (!choices.empty()) return "expected " + allowed + got;
      const std::string range = (allowed[0] == '[' || allowed[0] == '(' ? "in " : "") + allowed;
      return "expected " + expected() + (is_list(type) ? ", each " : " ") + range + got;
    }
  }
  return "";
}

std::string describe_yaml(const YAML::Node& node) {
  if (!node.IsDefined() || node.IsNull()) return "nothing";
  if (node.IsScalar()) return "'" + node.Scalar() + "'";
  YAML::Emitter out;
  out << YAML::Flow << node;
  return std::string(node.IsMap() ? "a mapping " : "a list ") + out.c_str();
}

const KeySpec* find_key_spec(const std::string& name) {
  static const std::map<std::string, const KeySpec*> index = [] {
    std::map<std::string, const KeySpec*> out;
    for (const auto& spec : config_schema()) out.emplace(spec.name, &spec);
    return out;
  }();
  const auto it = index.find(name);
  return it == index.end() ? nullptr : it->second;
}

const KeySpec& key_spec(const std::string& name) {
  const KeySpec* spec = find_key_spec(name);
  TORCH_INTERNAL_ASSERT(spec, "cac_engine: config key '", name,
                        "' is read but not declared in the schema (examples/engine/config_keys.cpp)");
  return *spec;
}

std::vector<std::string> section_children(const std::string& name) {
  std::vector<std::string> children;
  const std::string prefix = name.empty() ? "" : name + ".";
  for (const auto& spec : config_schema()) {
    if (spec.name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string rest = spec.name.substr(prefix.size());
    const std::string child = rest.substr(0, rest.find('.'));
    if (std::find(children.begin(), children.end(), child) == children.end()) children.push_back(child);
  }
  return children;
}

bool is_config_section(const std::string& name) { return name.empty() || !section_children(name).empty(); }

std::string suggest_key(const std::string& key) {
  const std::string parent = parent_of(key), leaf = leaf_of(key);
  std::string best;
  size_t best_distance = std::max<size_t>(2, leaf.size() / 3) + 1;
  for (const auto& child : section_children(parent)) {
    const size_t distance = edit_distance(leaf, child);
    if (distance < best_distance) {
      best_distance = distance;
      best = parent.empty() ? child : parent + "." + child;
    }
  }
  if (!best.empty()) return best;
  for (const auto& spec : config_schema()) {
    if (leaf_of(spec.name) == leaf) return spec.name;
  }
  return "";
}

std::string config_keys_markdown() {
  std::string out = "| key | type | default | allowed | meaning |\n|---|---|---|---|---|\n";
  for (const auto& spec : config_schema()) {
    out += "| `" + spec.name + "` | " + spec.type_text() + " | " + spec.default_doc() + " | " + spec.allowed_text() +
           " | " + spec.doc + " |\n";
  }
  return out;
}

}  // namespace cac_engine
