#pragma once
/// \file
/// Configs of the programs (`cac-train`, `cac-eval`, `cac-infer`): YAML files with
/// mmsegmentation-style inheritance. A file may list `_base_` files (paths relative to it) whose
/// mappings it deep-merges over, in order; a mapping with `_delete_: true` replaces the inherited
/// one instead of merging into it. `--set key.sub=value` overrides any key afterwards (the value
/// is parsed as YAML: `--set optimizer.lr=0.02`, `--set data.crop=[256,256]`).
///
/// ```
/// Config config = Config::load("configs/fcn_mobilenetv2_cac_ade20k_160k.yaml", {"optimizer.lr=0.02"});
/// double lr = config.get<double>("optimizer.lr");
/// int64_t iterations = config.get<int64_t>("schedule.iterations");
/// auto crop = config.get<std::vector<int64_t>>("data.train.crop", {512, 512});
/// ```
///
/// Every error names the file that set the key, the key, what was expected and what was found.

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace cac_engine {

/// A loaded, merged and overridden configuration (a YAML mapping) with typed access by dotted key.
class Config {
 public:
  /// An empty config (no keys).
  Config();

  /// Loads `file` with its `_base_` chain, then applies `overrides` (`key.sub=value` each).
  /// Throws `c10::Error` naming the file and the problem (missing file, YAML syntax error with
  /// line and column, a `_base_` cycle, a malformed override).
  static Config load(const std::filesystem::path& file, const std::vector<std::string>& overrides = {});

  /// A config from YAML text (`name` is used in messages; `_base_` paths are relative to the
  /// current directory).
  static Config parse(const std::string& yaml, const std::string& name = "<string>");

  /// Applies one `key.sub=value` override (creating missing mappings on the way).
  void set(const std::string& assignment);

  /// Whether `key` (dotted) exists and is not null.
  bool has(const std::string& key) const;

  /// The value at `key` converted to `T` (bool, int64_t, double, std::string, std::vector of
  /// those, or `YAML::Node`). Throws `c10::Error` "config error in FILE: key 'KEY': expected T
  /// but got VALUE" when the key is missing or of the wrong type.
  template <typename T>
  T get(const std::string& key) const;

  /// As `get`, but `fallback` when the key is absent or null (a present value of the wrong type
  /// is still an error).
  template <typename T>
  T get(const std::string& key, const T& fallback) const;

  /// Checks that `key` is one of `allowed` and returns it (e.g. an optimizer type).
  std::string get_choice(const std::string& key, const std::vector<std::string>& allowed,
                         const std::string& fallback = "") const;

  /// Keys of the mapping at `key` that are not in `known`: a misspelt option is an error, not a
  /// silently ignored line. Throws naming the file, the key and the known names.
  void check_keys(const std::string& key, const std::vector<std::string>& known) const;

  /// The merged config as YAML text (stored in checkpoints and work dirs).
  std::string dump() const;

  /// The file the config was loaded from (or the `parse` name).
  const std::string& name() const { return name_; }

  /// The file (or `--set`) that last set `key` or its closest parent; `name()` if unknown.
  std::string origin(const std::string& key) const;

  /// Throws the config error for `key` with `message` (for checks done by the callers).
  [[noreturn]] void fail(const std::string& key, const std::string& message) const;

 private:
  YAML::Node find(const std::string& key) const;
  void merge(YAML::Node target, const YAML::Node& source, const std::string& prefix, const std::string& origin);
  void record_origins(const YAML::Node& value, const std::string& prefix, const std::string& origin);

  YAML::Node root_;
  std::string name_;
  std::map<std::string, std::string> origins_;

  friend Config load_recursive(const std::filesystem::path& file, std::vector<std::filesystem::path>& stack);
};

}  // namespace cac_engine
