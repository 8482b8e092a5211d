#pragma once
// Helpers of the checkpoint suite: fixture paths, the expected-values JSON written by
// tests/fixtures/io/make_io_fixtures.py, and a temporary directory.

#include <cac/io/io.hpp>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <vector>
#include <string>

namespace io_test {

inline std::string fixture(const std::string& name) {
  return std::string(CAC_TEST_SOURCE_DIR) + "/fixtures/io/" + name;
}

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

inline c10::ScalarType dtype_of(const std::string& name) {
  static const std::map<std::string, c10::ScalarType> table = {
      {"float32", at::kFloat}, {"float16", at::kHalf}, {"bfloat16", at::kBFloat16}, {"float64", at::kDouble},
      {"int64", at::kLong},    {"int32", at::kInt},    {"uint8", at::kByte},        {"bool", at::kBool},
      {"int8", at::kChar},     {"int16", at::kShort}};
  return table.at(name);
}

/// The bytes of `t`'s values in row-major order, as hex (what the fixture script writes).
inline std::string hex_of(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  const auto* bytes = static_cast<const unsigned char*>(c.data_ptr());
  std::ostringstream out;
  for (size_t i = 0; i < c.nbytes(); ++i) out << std::hex << std::setw(2) << std::setfill('0') << int(bytes[i]);
  return out.str();
}

/// Checks `state_dict` against `<name>.expected.json`: keys, dtypes, sizes, strides, offsets,
/// bytes, and that tensors share a storage exactly when they did in Python.
inline void check_expected(const cac::io::StateDict& state_dict, const nlohmann::json& expected, bool views = true) {
  REQUIRE(state_dict.size() == expected.size());
  std::map<int, const c10::StorageImpl*> groups;
  for (const auto& [key, e] : expected.items()) {
    INFO("tensor " << key);
    REQUIRE(state_dict.count(key) == 1);
    const at::Tensor& t = state_dict.at(key);
    CHECK(t.scalar_type() == dtype_of(e["dtype"]));
    CHECK(t.sizes().vec() == e["sizes"].get<std::vector<int64_t>>());
    if (views) {
      CHECK(t.strides().vec() == e["strides"].get<std::vector<int64_t>>());
      CHECK(t.storage_offset() == e["offset"].get<int64_t>());
      const auto* impl = t.storage().unsafeGetStorageImpl();
      auto inserted = groups.emplace(e["storage"].get<int>(), impl);
      CHECK(inserted.first->second == impl);  // same group -> same storage
    }
    CHECK(hex_of(t) == e["hex"].get<std::string>());
  }
  if (views) {
    std::set<const c10::StorageImpl*> distinct;
    for (const auto& g : groups) distinct.insert(g.second);
    CHECK(distinct.size() == groups.size());  // different groups -> different storages
  }
}

/// A fresh directory under the system temp dir, removed at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() /
           ("cac_io_tests_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
  /// Names in the directory that look like a writer's temporary (`*.tmp*`).
  std::vector<std::string> temporaries() const {
    std::vector<std::string> out;
    for (const auto& entry : std::filesystem::directory_iterator(path)) {
      const std::string name = entry.path().filename().string();
      if (name.find(".tmp") != std::string::npos) out.push_back(name);
    }
    return out;
  }
  static int& counter() {
    static int n = 0;
    return n;
  }
};

/// True when /usr/bin/python3 can import torch.
inline bool python_torch_available() {
  static const bool available = std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0;
  return available;
}

/// The message of the `c10::Error` `f` throws (fails the test if it throws nothing or another type).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.msg();
  } catch (const std::exception& e) {
    FAIL("expected a c10::Error but got std::exception: " << e.what());
  } catch (...) {
    FAIL("expected a c10::Error but got an unknown exception");
  }
  FAIL("expected a c10::Error but nothing was thrown");
  return "";
}

}  // namespace io_test
