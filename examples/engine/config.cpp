#include "config.hpp"

#include "data/context_shift.hpp"
#include "data/dataset.hpp"
#include "schema.hpp"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <system_error>

namespace cac_engine {

namespace {

std::vector<std::string> split_key(const std::string& key) {
  std::vector<std::string> parts;
  std::stringstream stream(key);
  std::string part;
  while (std::getline(stream, part, '.')) parts.push_back(part);
  return parts;
}

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) out += (out.empty() ? "" : ", ") + name;
  return out;
}

template <typename T>
const char* type_name() {
  if constexpr (std::is_same_v<T, bool>) return "a boolean";
  if constexpr (std::is_same_v<T, int64_t>) return "an integer";
  if constexpr (std::is_same_v<T, double>) return "a number";
  if constexpr (std::is_same_v<T, std::string>) return "a string";
  if constexpr (std::is_same_v<T, std::vector<int64_t>>) return "a list of integers";
  if constexpr (std::is_same_v<T, std::vector<double>>) return "a list of numbers";
  if constexpr (std::is_same_v<T, std::vector<std::string>>) return "a list of strings";
  return "a value";  // YAML::Node
}

template <typename T>
T convert(const YAML::Node& node) {
  return node.as<T>();
}
template <>
std::string convert<std::string>(const YAML::Node& node) {
  if (!node.IsScalar()) throw YAML::BadConversion(node.Mark());
  return node.Scalar();
}
template <>
YAML::Node convert<YAML::Node>(const YAML::Node& node) {
  return YAML::Clone(node);
}

// The C++ type that reads a key of each schema type.
template <typename T>
bool reads(KeyType type) {
  if constexpr (std::is_same_v<T, YAML::Node>) return true;
  switch (type) {
    case KeyType::Boolean: return std::is_same_v<T, bool>;
    case KeyType::Integer: return std::is_same_v<T, int64_t>;
    case KeyType::Number: return std::is_same_v<T, double>;
    case KeyType::String: return std::is_same_v<T, std::string>;
    case KeyType::Integers: return std::is_same_v<T, std::vector<int64_t>>;
    case KeyType::Numbers: return std::is_same_v<T, std::vector<double>>;
    case KeyType::Strings: return std::is_same_v<T, std::vector<std::string>>;
  }
  return false;
}

// Duplicate keys of every mapping in `node` (YAML would silently keep one of them).
void check_unique_keys(const YAML::Node& node, const std::string& where, const std::string& prefix) {
  if (node.IsSequence()) {
    for (const auto& element : node) check_unique_keys(element, where, prefix);
    return;
  }
  if (!node.IsMap()) return;
  std::map<std::string, int> lines;
  for (const auto& item : node) {
    const std::string name = item.first.Scalar();
    const std::string key = prefix + name;
    const int line = item.first.Mark().line + 1;
    const auto [it, fresh] = lines.emplace(name, line);
    TORCH_CHECK(fresh, "config error in ", where, ": key '", key, "' is given twice (lines ", it->second, " and ", line,
                "); remove one of them");
    check_unique_keys(item.second, where, key + ".");
  }
}

YAML::Node read_file(const std::filesystem::path& file) {
  TORCH_CHECK(!std::filesystem::is_directory(file), "config error: expected a config file at ", file.string(),
              " but it is a directory");
  TORCH_CHECK(std::filesystem::is_regular_file(file), "config error: expected a config file at ", file.string(),
              " but it does not exist");
  try {
    YAML::Node node = YAML::LoadFile(file.string());
    TORCH_CHECK(!node.IsDefined() || node.IsNull() || node.IsMap(), "config error in ", file.string(),
                ": expected a mapping at the top level but got ", describe_yaml(node));
    check_unique_keys(node, file.string(), "");
    return node.IsMap() ? node : YAML::Node(YAML::NodeType::Map);
  } catch (const YAML::Exception& e) {
    TORCH_CHECK(false, "config error in ", file.string(), ": invalid YAML at line ", e.mark.line + 1, ", column ",
                e.mark.column + 1, ": ", e.msg);
  }
  return {};
}

}  // namespace

Config::Config() : root_(YAML::NodeType::Map) {}

void Config::merge(YAML::Node target, const YAML::Node& source, const std::string& prefix, const std::string& origin) {
  for (const auto& item : source) {
    const std::string name = item.first.as<std::string>();
    if (prefix.empty() && name == "_base_") continue;
    const std::string key = prefix + name;
    const YAML::Node value = item.second;
    origins_[key] = origin;
    bool replace = false;
    if (value.IsMap() && value["_delete_"]) {
      TORCH_CHECK(scalar_fits(value["_delete_"], KeyType::Boolean), "config error in ", origin.empty() ? name_ : origin,
                  ": key '", key, "._delete_': expected a boolean but got ", describe_yaml(value["_delete_"]));
      replace = value["_delete_"].as<bool>();
    }
    if (value.IsMap() && !replace && target[name].IsMap()) {
      merge(target[name], value, key + ".", origin);
      continue;
    }
    YAML::Node copy = YAML::Clone(value);
    if (replace) copy.remove("_delete_");
    target[name] = copy;
    record_origins(copy, key + ".", origin);
  }
}

void Config::record_origins(const YAML::Node& value, const std::string& prefix, const std::string& origin) {
  if (!value.IsMap()) return;
  for (const auto& item : value) {
    const std::string key = prefix + item.first.as<std::string>();
    origins_[key] = origin;
    record_origins(item.second, key + ".", origin);
  }
}

Config load_recursive(const std::filesystem::path& file, std::vector<std::filesystem::path>& stack) {
  const std::filesystem::path path = std::filesystem::weakly_canonical(file);
  TORCH_CHECK(std::find(stack.begin(), stack.end(), path) == stack.end(), "config error in ", path.string(),
              ": expected an acyclic _base_ chain but the file includes itself through ",
              stack.empty() ? path.string() : stack.back().string());
  const YAML::Node node = read_file(path);
  stack.push_back(path);
  Config config;
  config.name_ = path.string();
  if (const YAML::Node bases = node["_base_"]) {
    TORCH_CHECK(bases.IsScalar() || bases.IsSequence(), "config error in ", path.string(),
                ": key '_base_': expected a file name or a list of file names but got ", describe_yaml(bases));
    std::vector<std::string> names;
    if (bases.IsScalar()) {
      names.push_back(bases.Scalar());
    } else {
      for (const auto& base : bases) {
        TORCH_CHECK(base.IsScalar(), "config error in ", path.string(), ": key '_base_': expected file names but got ",
                    describe_yaml(base));
        names.push_back(base.Scalar());
      }
    }
    for (const auto& name : names) {
      const Config base = load_recursive(path.parent_path() / name, stack);
      config.merge(config.root_, base.root_, "", "");
      for (const auto& entry : base.origins_) config.origins_[entry.first] = entry.second;
    }
  }
  config.merge(config.root_, node, "", path.string());
  stack.pop_back();
  return config;
}

Config Config::load(const std::filesystem::path& file, const std::vector<std::string>& overrides) {
  std::vector<std::filesystem::path> stack;
  Config config = load_recursive(file, stack);
  for (const auto& assignment : overrides) config.set(assignment);
  config.validate(Use::Any);
  return config;
}

Config Config::parse(const std::string& yaml, const std::string& name) {
  YAML::Node node;
  try {
    node = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    TORCH_CHECK(false, "config error in ", name, ": invalid YAML at line ", e.mark.line + 1, ", column ",
                e.mark.column + 1, ": ", e.msg);
  }
  TORCH_CHECK(!node.IsDefined() || node.IsNull() || node.IsMap(), "config error in ", name,
              ": expected a mapping at the top level but got ", describe_yaml(node));
  check_unique_keys(node, name, "");
  Config config;
  config.name_ = name;
  if (node.IsMap()) {
    TORCH_CHECK(!node["_base_"], "config error in ", name, ": key '_base_' is only supported in files");
    config.merge(config.root_, node, "", name);
  }
  return config;
}

void Config::set(const std::string& assignment) {
  const auto eq = assignment.find('=');
  TORCH_CHECK(eq != std::string::npos && eq > 0, "config error in --set: expected key=value but got '", assignment,
              "'");
  const std::string key = assignment.substr(0, eq);
  YAML::Node value;
  try {
    value = YAML::Load(assignment.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    TORCH_CHECK(false, "config error in --set: key '", key, "': invalid YAML value '", assignment.substr(eq + 1),
                "': ", e.msg);
  }
  check_unique_keys(value, "--set", key + ".");
  const auto parts = split_key(key);
  TORCH_CHECK(std::none_of(parts.begin(), parts.end(), [](const std::string& p) { return p.empty(); }),
              "config error in --set: expected a dotted key like optimizer.lr but got '", key, "'");
  YAML::Node node(root_);
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node child = node[parts[i]];
    if (!child.IsMap()) {
      TORCH_CHECK(!child.IsDefined() || child.IsNull(), "config error in --set: key '", key, "': expected '", parts[i],
                  "' to be a mapping but got ", describe_yaml(child), " (set in ", origin(parts[i]), ")");
      node[parts[i]] = YAML::Node(YAML::NodeType::Map);
      child.reset(node[parts[i]]);
      std::string created;
      for (size_t j = 0; j <= i; ++j) created += (j ? "." : "") + parts[j];
      origins_[created] = "--set";
    }
    node.reset(child);
  }
  node[parts.back()] = value;
  // The subtree now comes from --set: no key under it is blamed on the file it replaced.
  for (auto it = origins_.lower_bound(key + "."); it != origins_.end() && it->first.rfind(key + ".", 0) == 0;) {
    it = origins_.erase(it);
  }
  origins_[key] = "--set";
  record_origins(value, key + ".", "--set");
}

YAML::Node Config::find(const std::string& key) const {
  YAML::Node node(root_);
  if (key.empty()) return node;
  for (const auto& part : split_key(key)) {
    if (!node.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    const YAML::Node child = static_cast<const YAML::Node&>(node)[part];
    if (!child.IsDefined()) return YAML::Node(YAML::NodeType::Undefined);
    node.reset(child);
  }
  return node;
}

bool Config::has(const std::string& key) const {
  const YAML::Node node = find(key);
  return node.IsDefined() && !node.IsNull();
}

std::string Config::origin(const std::string& key) const {
  std::string probe = key;
  while (!probe.empty()) {
    const auto it = origins_.find(probe);
    if (it != origins_.end() && !it->second.empty()) return it->second;
    const auto dot = probe.rfind('.');
    probe = dot == std::string::npos ? "" : probe.substr(0, dot);
  }
  return name_;
}

void Config::fail(const std::string& key, const std::string& message) const {
  C10_THROW_ERROR(Error, "config error in " + origin(key) + ": key '" + key + "': " + message);
}

template <typename T>
T Config::get(const std::string& key) const {
  const KeySpec& spec = key_spec(key);
  TORCH_INTERNAL_ASSERT(reads<T>(spec.type), "cac_engine: config key '", key, "' is declared as ", spec.type_text(),
                        " but read as ", type_name<T>());
  YAML::Node node = find(key);
  if (!node.IsDefined() || node.IsNull()) {
    if (spec.default_text.empty()) fail(key, std::string("expected ") + type_name<T>() + " but it is missing");
    node = YAML::Load(spec.default_text);
  } else if (const std::string problem = spec.problem(node); !problem.empty()) {
    fail(key, problem);
  }
  try {
    return convert<T>(node);
  } catch (const YAML::Exception&) {
    fail(key, std::string("expected ") + type_name<T>() + " but got " + describe_yaml(node));
  }
}

template <typename T>
T Config::get(const std::string& key, const T& fallback) const {
  const KeySpec& spec = key_spec(key);
  TORCH_INTERNAL_ASSERT(spec.default_text.empty(), "cac_engine: config key '", key, "' has the schema default ",
                        spec.default_text, "; read it with get(key), not with a fallback");
  return has(key) ? get<T>(key) : fallback;
}

void Config::check_section(const YAML::Node& node, const std::string& prefix) const {
  for (const auto& item : node) {
    const std::string key = prefix.empty() ? item.first.Scalar() : prefix + "." + item.first.Scalar();
    const YAML::Node value = item.second;
    if (const KeySpec* spec = find_key_spec(key)) {
      if (value.IsNull()) continue;  // as absent
      if (const std::string problem = spec->problem(value); !problem.empty()) fail(key, problem);
    } else if (is_config_section(key)) {
      if (value.IsNull()) continue;
      if (!value.IsMap())
        fail(key, "expected a mapping of " + join(section_children(key)) + " but got " + describe_yaml(value));
      check_section(value, key);
    } else {
      const std::string suggestion = suggest_key(key);
      fail(key, "unknown key" + (suggestion.empty() ? std::string() : " (did you mean '" + suggestion + "'?)") +
                    "; expected one of " + join(section_children(prefix)));
    }
  }
}

void Config::check_relations(Use use) const {
  const std::string type = has("data.type") ? get<std::string>("data.type") : "";
  if (type == "custom" && use != Use::Any) {
    std::vector<std::string> needed{"data.classes", "data.val_img_dir", "data.val_ann_dir"};
    if (use == Use::Training) needed.insert(needed.end(), {"data.train_img_dir", "data.train_ann_dir"});
    for (const auto& key : needed) {
      if (!has(key)) fail(key, "expected " + key_spec(key).expected() + " for data.type 'custom' but it is missing");
    }
  }
  // The model's classes are the dataset's: a mismatch fails here, not after training.
  if (has("model.num_classes") && !type.empty()) {
    int64_t classes = -1;
    std::string source;
    if (has("data.classes")) {
      classes = static_cast<int64_t>(get<std::vector<std::string>>("data.classes").size());
      source = "data.classes";
    } else if (type == "context_shift") {
      classes = get<int64_t>("data.context_shift.num_classes");
      source = "data.context_shift.num_classes";
    } else if (type != "custom") {
      classes = type == "ade20k"           ? cac_data::ade20k_info().num_classes()
                : type == "coco_stuff164k" ? cac_data::coco_stuff164k_info().num_classes()
                : type == "cityscapes"     ? cac_data::cityscapes_info().num_classes()
                                           : cac_data::pascal_context59_info().num_classes();
      source = "data.type '" + type + "'";
    }
    const int64_t model = get<int64_t>("model.num_classes");
    if (classes >= 0 && model != classes) {
      fail("model.num_classes",
           "expected " + std::to_string(classes) + " (the classes of " + source + ") but got " + std::to_string(model));
    }
  }
  const auto ratio = get<std::vector<double>>("data.train_pipeline.ratio_range");
  if (ratio[0] > ratio[1])
    fail("data.train_pipeline.ratio_range",
         "expected {min, max} with min <= max but got " + describe_yaml(find("data.train_pipeline.ratio_range")));
  if (get<std::string>("evaluation.mode") == "slide") {
    const auto crop = get<std::vector<int64_t>>("evaluation.crop");
    const auto stride = get<std::vector<int64_t>>("evaluation.stride");
    if (stride[0] > crop[0] || stride[1] > crop[1]) {
      fail("evaluation.stride", "expected a stride within evaluation.crop [" + std::to_string(crop[0]) + ", " +
                                    std::to_string(crop[1]) + "] (windows would leave gaps) but got [" +
                                    std::to_string(stride[0]) + ", " + std::to_string(stride[1]) + "]");
    }
  }
}

std::string pretrained_weights(const Config& config) {
  const std::string path = config.get<std::string>("model.pretrained");
  return path == kNoPretrained ? std::string() : path;
}

void Config::check_pretrained() const {
  const std::string path = pretrained_weights(*this);
  if (path.empty()) return;
  std::error_code error;
  if (std::filesystem::is_regular_file(path, error)) return;
  const std::string source = get<std::string>("model.pretrained_source");
  const std::string url = get<std::string>("model.pretrained_url");
  const std::string model = has("model.name") ? get<std::string>("model.name") : "NAME";
  std::filesystem::path where = std::filesystem::path(path);
  if (where.is_relative()) where = std::filesystem::current_path(error) / where;
  fail("model.pretrained",
       "expected the initial weights '" + path + "' (" + where.lexically_normal().string() +
           ") but there is no such file. " +
           (url.empty() ? std::string("Put the file there") : "Download " + url + " to that path") +
           " (docs/training.md, \"Pretrained weights\"); it is read as it is, zip or legacy torch.save, keys in the `" +
           source + "` layout (model.pretrained_source), so no conversion is needed; `cac-convert " + path +
           " checked.pth --from " + source + " --model " + model +
           "` prints how its keys match the model. Or point to your copy with --set model.pretrained=PATH, or train "
           "from scratch on purpose with --set model.pretrained=" +
           kNoPretrained);
}

void Config::validate(Use use) const {
  check_section(root_, "");
  if (use != Use::Any) {
    for (const auto& spec : config_schema()) {
      const bool needed =
          spec.required == Requirement::Always || (spec.required == Requirement::Training && use == Use::Training);
      if (needed && !has(spec.name)) fail(spec.name, "expected " + spec.expected() + " but it is missing");
    }
  }
  check_relations(use);
  if (use == Use::Training) check_pretrained();
}

std::string Config::dump() const {
  YAML::Emitter out;
  out << root_;
  return std::string(out.c_str()) + "\n";
}

#define CAC_CONFIG_INSTANTIATE(T)                      \
  template T Config::get<T>(const std::string&) const; \
  template T Config::get<T>(const std::string&, const T&) const;
CAC_CONFIG_INSTANTIATE(bool)
CAC_CONFIG_INSTANTIATE(int64_t)
CAC_CONFIG_INSTANTIATE(double)
CAC_CONFIG_INSTANTIATE(std::string)
CAC_CONFIG_INSTANTIATE(std::vector<int64_t>)
CAC_CONFIG_INSTANTIATE(std::vector<double>)
CAC_CONFIG_INSTANTIATE(std::vector<std::string>)
CAC_CONFIG_INSTANTIATE(YAML::Node)
#undef CAC_CONFIG_INSTANTIATE

}  // namespace cac_engine
