#pragma once
/// \file
/// The declared config schema: one entry per key the programs read, with its type, default,
/// allowed values or range and a one-line doc. `Config` validates against it (unknown keys with a
/// "did you mean", types, closed sets, ranges) and takes its defaults from it, and
/// docs/training.md's key table is `config_keys_markdown()` (a test compares them).
///
/// ```
/// const cac_engine::KeySpec& spec = cac_engine::key_spec("data.train_pipeline.flip_prob");
/// // spec.type == KeyType::Number, spec.default_text == "0.5", range [0, 1]
/// ```
///
/// To add a key: declare it in config_keys.cpp (beside its section, its default taken from the options
/// struct it fills), read it with `config.get<T>("section.key")`, and paste the regenerated row
/// into docs/training.md (the docs test prints it).

#include <yaml-cpp/yaml.h>

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace cac_engine {

/// The type of a config value.
enum class KeyType {
  /// `true` / `false` (C++ `bool`).
  Boolean,
  /// An integer (C++ `int64_t`).
  Integer,
  /// A number (C++ `double`).
  Number,
  /// A string (C++ `std::string`).
  String,
  /// A list of integers (C++ `std::vector<int64_t>`).
  Integers,
  /// A list of numbers (C++ `std::vector<double>`).
  Numbers,
  /// A list of strings (C++ `std::vector<std::string>`).
  Strings,
};

/// Whether a key must be present.
enum class Requirement {
  /// The key may be absent: its default (or the derived value its doc describes) applies.
  Optional,
  /// Every program needs the key (the model and the dataset).
  Always,
  /// Training needs the key (the optimizer and the schedule); evaluation and inference do not.
  Training,
};

/// One end of a numeric range.
struct Bound {
  /// The bound.
  double value;
  /// Whether `value` itself is allowed.
  bool inclusive;
};

/// One config key: name, type, default, allowed values and doc. Declared in config_keys.cpp with the
/// fluent setters, e.g. `KeySpec("runtime.log_interval", KeyType::Integer, "...").def(50).min(1)`.
struct KeySpec {
  /// A key `name` (dotted, e.g. `optimizer.lr`) of type `type`, documented by `doc` (one line).
  KeySpec(std::string name, KeyType type, std::string doc);

  /// Dotted name, e.g. `data.train_pipeline.flip_prob`.
  std::string name;
  /// Value type.
  KeyType type;
  /// One-line meaning (the docs table's last column).
  std::string doc;
  /// The default as YAML text (e.g. `0.5`, `[512, 512]`, `whole`); empty when there is none
  /// (a required key, or a derived default described by `derived`).
  std::string default_text;
  /// What applies when the key is absent and has no fixed default (e.g. "the layout's").
  std::string derived;
  /// Whether the key must be present.
  Requirement required = Requirement::Optional;
  /// The allowed values of a `String` key (empty: any string).
  std::vector<std::string> choices;
  /// Lower bound of a number (of every element for lists).
  std::optional<Bound> lower;
  /// Upper bound of a number (of every element for lists).
  std::optional<Bound> upper;
  /// The exact length of a list (0: any length).
  size_t length = 0;
  /// Whether a list must have at least one element.
  bool non_empty = false;

  /// Sets the default (`bool`, integers, numbers, strings or lists of them).
  KeySpec& def(bool value);
  /// \copydoc def(bool)
  KeySpec& def(int64_t value);
  /// \copydoc def(bool)
  KeySpec& def(int value) { return def(static_cast<int64_t>(value)); }
  /// \copydoc def(bool)
  KeySpec& def(uint64_t value) { return def(static_cast<int64_t>(value)); }
  /// \copydoc def(bool)
  KeySpec& def(double value);
  /// \copydoc def(bool)
  KeySpec& def(const std::string& value);
  /// \copydoc def(bool)
  KeySpec& def(const char* value) { return def(std::string(value)); }
  /// \copydoc def(bool)
  KeySpec& def(const std::vector<int64_t>& value);
  /// \copydoc def(bool)
  KeySpec& def(const std::vector<double>& value);
  /// \copydoc def(bool)
  KeySpec& def(const std::vector<std::string>& value);
  /// No fixed default: `text` says what applies when the key is absent.
  KeySpec& derive(std::string text);
  /// The key must be present (for every program, or for training only).
  KeySpec& require(Requirement requirement = Requirement::Always);
  /// A closed set of strings.
  KeySpec& one_of(std::vector<std::string> values);
  /// Values ≥ `value`.
  KeySpec& min(double value);
  /// Values > `value`.
  KeySpec& above(double value);
  /// Values ≤ `value`.
  KeySpec& max(double value);
  /// Values < `value`.
  KeySpec& below(double value);
  /// Lists of exactly `n` elements.
  KeySpec& size(size_t n);
  /// Lists of at least one element.
  KeySpec& not_empty();

  /// The type as the docs write it: `bool`, `int`, `float`, `string`, `int[2]`, `float[]`, ...
  std::string type_text() const;
  /// The default as the docs write it: `` `0.5` ``, "required", or the derived text.
  std::string default_doc() const;
  /// The allowed values as the docs and errors write them: `one of a, b`, `[0, 1]`, `> 0`, or "".
  std::string allowed_text() const;
  /// Whether `value` is in the range (`lower`, `upper`).
  bool in_range(double value) const;
  /// What a value of this key is, for messages: `a number`, `a list of 2 integers`, ...
  std::string expected() const;
  /// What is wrong with `value` (present, not null) for this key: "expected <type> but got
  /// <value>", "expected a number in [0, 1] but got '2'", "expected one of a, b but got 'c'"; ""
  /// if it is valid.
  std::string problem(const YAML::Node& value) const;
};

/// Whether the YAML scalar `node` reads as an element of `type` (numbers must be finite).
bool scalar_fits(const YAML::Node& node, KeyType type);

/// A YAML value as messages quote it: `'0.5'`, `a list [1, 2]`, `a mapping {a: 1}`, `nothing`.
std::string describe_yaml(const YAML::Node& node);

/// Every key, section by section (model, data, optimizer, schedule, runtime, evaluation), in
/// the docs' order. Built once.
const std::vector<KeySpec>& config_schema();

/// The spec of `name`, or nullptr if the schema does not declare it.
const KeySpec* find_key_spec(const std::string& name);

/// The spec of `name`; a key the schema does not declare is a programming error (c10::Error
/// saying so, raised by TORCH_INTERNAL_ASSERT).
const KeySpec& key_spec(const std::string& name);

/// Whether `name` is a section (a mapping) of the schema: "" (the top level), `model`,
/// `model.cac_loss.kl`, ...
bool is_config_section(const std::string& name);

/// The declared children of section `name` (leaf keys and sub-sections), in declaration order.
std::vector<std::string> section_children(const std::string& name);

/// The closest declared key to `key` (an unknown key): a sibling with a small edit distance, or
/// a key elsewhere with the same last component; "" if none.
std::string suggest_key(const std::string& key);

/// docs/training.md's key table (`| key | type | default | meaning |`), one row per key.
std::string config_keys_markdown();

}  // namespace cac_engine
