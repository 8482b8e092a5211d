#pragma once
/// \file
/// Configs of the programs (`cac-train`, `cac-eval`, `cac-infer`): YAML files with
/// mmsegmentation-style inheritance. A file may list `_base_` files (paths relative to it) whose
/// mappings it deep-merges over, in order; a mapping with `_delete_: true` replaces the inherited
/// one instead of merging into it. `--set key.sub=value` overrides any key afterwards (the value
/// is parsed as YAML: `--set optimizer.lr=0.02`, `--set data.crop=[256,256]`).
///
/// ```
/// Config config = Config::load(configs_dir() / "ade20k/fcn_mobilenetv2_cac_160k.yaml", {"optimizer.lr=0.02"});
/// config.validate();                                         // what training reads, before it starts
/// double lr = config.get<double>("optimizer.lr");
/// int64_t iterations = config.get<int64_t>("schedule.iterations");
/// auto crop = config.get<std::vector<int64_t>>("data.train_pipeline.crop_size");  // default: the schema's
/// ```
///
/// Every key is declared once, in the schema (schema.hpp): its type, default, allowed values and
/// doc. Loading checks every value present against it (unknown keys, with a "did you mean";
/// types; closed sets; ranges; duplicate YAML keys), `get` takes its defaults from it, and reading
/// an undeclared key is a programming error. Every error names the file that set the key (the
/// `_base_` file or `--set`), the key, what was expected and what was found.

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace cac_engine {

/// What a program does with a config: which keys `Config::validate` requires.
enum class Use {
  /// Only the values present are checked (what `Config::load` does).
  Any,
  /// Evaluation and inference: the model and dataset keys are required too.
  Evaluation,
  /// Training: the optimizer and schedule keys are required too.
  Training,
};

/// The directory of the shipped configs: `$CAC_CONFIGS_DIR` if set, else the installed
/// `share/cac/configs` beside the running program (`<prefix>/bin/../share/cac/configs`), else the
/// source tree's `configs/` (programs run from the build tree). Throws `c10::Error` listing the
/// places searched when none exists.
std::filesystem::path configs_dir();

/// As `configs_dir()`, for a program at `executable` (testable without installing).
std::filesystem::path configs_dir(const std::filesystem::path& executable);

/// A loaded, merged and overridden configuration (a YAML mapping) with typed access by dotted key.
class Config {
 public:
  /// An empty config (no keys).
  Config();

  /// Loads `file` with its `_base_` chain, then applies `overrides` (`key.sub=value` each), then
  /// checks every value present against the schema (`validate(Use::Any)`). Throws `c10::Error`
  /// naming the file and the problem (missing file, YAML syntax error with line and column, a
  /// duplicate key, a `_base_` cycle, a malformed override, an invalid value).
  static Config load(const std::filesystem::path& file, const std::vector<std::string>& overrides = {});

  /// A config from YAML text (`name` is used in messages; `_base_` is not supported). Not
  /// validated: call `validate()` once it is complete (values are still checked when read).
  static Config parse(const std::string& yaml, const std::string& name = "<string>");

  /// Applies one `key.sub=value` override (creating missing mappings on the way). Not
  /// validated: call `validate()` after the last one (values are still checked when read).
  void set(const std::string& assignment);

  /// Whether `key` (dotted) exists and is not null.
  bool has(const std::string& key) const;

  /// The value at `key` converted to `T` (bool, int64_t, double, std::string, std::vector of
  /// those, or `YAML::Node`), checked against the schema, or the schema's default when absent.
  /// Throws `c10::Error` "config error in FILE: key 'KEY': expected T but got VALUE" when the
  /// value is invalid, or "... but it is missing" when absent without a default. `key` must be
  /// declared in the schema with the type `T` (TORCH_INTERNAL_ASSERT).
  template <typename T>
  T get(const std::string& key) const;

  /// As `get`, for a key whose default depends on other keys (the schema declares no fixed
  /// default): `fallback` when absent. A key with a schema default is read with `get(key)`
  /// (TORCH_INTERNAL_ASSERT), so each default is written once.
  template <typename T>
  T get(const std::string& key, const T& fallback) const;

  /// Checks the whole config against the schema before any work: every key is declared (an
  /// unknown one gets a "did you mean"), every value has its type, closed set and range, the keys
  /// `use` requires are present, and the keys agree (`model.num_classes` and the dataset's
  /// classes, `ratio_range` ordered, sliding-window stride within the crop, a `custom` dataset's
  /// directories). For `Use::Training`, the file `model.pretrained` names must exist (unless it
  /// is `none` or empty): a Table 1 config without its ImageNet weights fails here, naming the
  /// file, `model.pretrained_url`, the layout and the `none` escape, instead of training from
  /// scratch. Throws the first problem as `c10::Error` naming the file, key and value.
  void validate(Use use = Use::Training) const;

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
  void check_section(const YAML::Node& node, const std::string& prefix) const;
  void check_relations(Use use) const;
  void check_pretrained() const;
  void merge(YAML::Node target, const YAML::Node& source, const std::string& prefix, const std::string& origin);
  void record_origins(const YAML::Node& value, const std::string& prefix, const std::string& origin);

  YAML::Node root_;
  std::string name_;
  std::map<std::string, std::string> origins_;

  friend Config load_recursive(const std::filesystem::path& file, std::vector<std::filesystem::path>& stack);
};

/// The value of `model.pretrained` that means "no initial weights" (train from scratch), besides
/// the empty default.
inline constexpr const char* kNoPretrained = "none";

/// The initial weights `config` names in `model.pretrained`: the path as written (relative paths
/// are relative to the working directory), or "" for `none` and the empty default. What the
/// trainer loads; `Config::validate(Use::Training)` checks that the file exists.
///
/// ```
/// if (const std::string path = cac_engine::pretrained_weights(config); !path.empty()) load(path);
/// ```
std::string pretrained_weights(const Config& config);

}  // namespace cac_engine
