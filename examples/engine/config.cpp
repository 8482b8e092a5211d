#include "config.hpp"

#include <c10/util/Exception.h>

#include <algorithm>
#include <fstream>
#include <sstream>

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

std::string describe(const YAML::Node& node) {
  if (!node.IsDefined() || node.IsNull()) return "nothing";
  if (node.IsScalar()) return "'" + node.Scalar() + "'";
  YAML::Emitter out;
  out << YAML::Flow << node;
  return std::string(node.IsMap() ? "a mapping " : "a list ") + out.c_str();
}

template <typename T>
const char* type_name();
template <>
const char* type_name<bool>() { return "a boolean"; }
template <>
const char* type_name<int64_t>() { return "an integer"; }
template <>
const char* type_name<double>() { return "a number"; }
template <>
const char* type_name<std::string>() { return "a string"; }
template <>
const char* type_name<std::vector<int64_t>>() { return "a list of integers"; }
template <>
const char* type_name<std::vector<double>>() { return "a list of numbers"; }
template <>
const char* type_name<std::vector<std::string>>() { return "a list of strings"; }
template <>
const char* type_name<YAML::Node>() { return "a value"; }

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

YAML::Node read_file(const std::filesystem::path& file) {
  TORCH_CHECK(std::filesystem::is_regular_file(file), "config error: expected a config file at ", file.string(),
              " but it does not exist");
  try {
    YAML::Node node = YAML::LoadFile(file.string());
    TORCH_CHECK(!node.IsDefined() || node.IsNull() || node.IsMap(), "config error in ", file.string(),
                ": expected a mapping at the top level but got ", describe(node));
    return node.IsMap() ? node : YAML::Node(YAML::NodeType::Map);
  } catch (const YAML::Exception& e) {
    TORCH_CHECK(false, "config error in ", file.string(), ": invalid YAML at line ", e.mark.line + 1, ", column ",
                e.mark.column + 1, ": ", e.msg);
  }
  return {};
}

}  // namespace

Config::Config() : root_(YAML::NodeType::Map) {}

void Config::merge(YAML::Node target, const YAML::Node& source, const std::string& prefix,
                   const std::string& origin) {
  for (const auto& item : source) {
    const std::string name = item.first.as<std::string>();
    if (prefix.empty() && name == "_base_") continue;
    const std::string key = prefix + name;
    const YAML::Node value = item.second;
    origins_[key] = origin;
    const bool replace = value.IsMap() && value["_delete_"] && value["_delete_"].as<bool>(false);
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
                ": key '_base_': expected a file name or a list of file names but got ", describe(bases));
    std::vector<std::string> names;
    if (bases.IsScalar()) {
      names.push_back(bases.Scalar());
    } else {
      for (const auto& base : bases) {
        TORCH_CHECK(base.IsScalar(), "config error in ", path.string(),
                    ": key '_base_': expected file names but got ", describe(base));
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
              ": expected a mapping at the top level but got ", describe(node));
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
  const auto parts = split_key(key);
  TORCH_CHECK(std::none_of(parts.begin(), parts.end(), [](const std::string& p) { return p.empty(); }),
              "config error in --set: expected a dotted key like optimizer.lr but got '", key, "'");
  YAML::Node node(root_);
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node child = node[parts[i]];
    if (!child.IsMap()) {
      TORCH_CHECK(!child.IsDefined() || child.IsNull(), "config error in --set: key '", key, "': expected '",
                  parts[i], "' to be a mapping but got ", describe(child), " (set in ", origin(parts[i]), ")");
      node[parts[i]] = YAML::Node(YAML::NodeType::Map);
      child.reset(node[parts[i]]);
    }
    node.reset(child);
  }
  node[parts.back()] = value;
  origins_[key] = "--set";
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
  TORCH_CHECK(false, "config error in ", origin(key), ": key '", key, "': ", message);
  throw;  // unreachable
}

template <typename T>
T Config::get(const std::string& key) const {
  const YAML::Node node = find(key);
  if (!node.IsDefined() || node.IsNull()) fail(key, std::string("expected ") + type_name<T>() + " but it is missing");
  try {
    return convert<T>(node);
  } catch (const YAML::Exception&) {
    fail(key, std::string("expected ") + type_name<T>() + " but got " + describe(node));
  }
}

template <typename T>
T Config::get(const std::string& key, const T& fallback) const {
  return has(key) ? get<T>(key) : fallback;
}

std::string Config::get_choice(const std::string& key, const std::vector<std::string>& allowed,
                               const std::string& fallback) const {
  const std::string value = fallback.empty() ? get<std::string>(key) : get<std::string>(key, fallback);
  if (std::find(allowed.begin(), allowed.end(), value) == allowed.end()) {
    fail(key, "expected one of " + join(allowed) + " but got '" + value + "'");
  }
  return value;
}

void Config::check_keys(const std::string& key, const std::vector<std::string>& known) const {
  const YAML::Node node = find(key);
  if (!node.IsDefined() || node.IsNull()) return;
  if (!node.IsMap()) fail(key, "expected a mapping but got " + describe(node));
  for (const auto& item : node) {
    const std::string name = item.first.as<std::string>();
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      const std::string full = key.empty() ? name : key + "." + name;
      fail(full, "unknown key; expected one of " + join(known));
    }
  }
}

std::string Config::dump() const {
  YAML::Emitter out;
  out << root_;
  return std::string(out.c_str()) + "\n";
}

#define CAC_CONFIG_INSTANTIATE(T)                                   \
  template T Config::get<T>(const std::string&) const;              \
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
