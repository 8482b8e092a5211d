// cac-zoo-keys-check KEYS.json...: for each key list that tests/fixtures/io/make_io_fixtures.py
// transcribed from mmsegmentation's module definitions, builds the zoo model it names and checks
// that a checkpoint with exactly those keys and shapes loads strictly (official CAC lists through
// cac_models::convert_state_dict). Prints the load report; exit code 1 on any mismatch.

#include <cac/io/io.hpp>
#include <models/converters.hpp>
#include <models/registry.hpp>

#include <nlohmann/json.hpp>

#include <fstream>
#include <iostream>

int main(int argc, char** argv) {
  int failures = 0;
  for (int i = 1; i < argc; ++i) {
    std::ifstream file(argv[i]);
    const auto json = nlohmann::json::parse(file);
    cac::io::StateDict weights;
    for (const auto& [key, shape] : json["keys"].items()) {
      weights[key] = torch::zeros(shape.get<std::vector<int64_t>>(),
                                  key.find("num_batches_tracked") != std::string::npos ? torch::kLong : torch::kFloat);
    }
    const bool official = std::string(argv[i]).find("cac_official") != std::string::npos;
    if (official) weights = cac_models::convert_state_dict(weights, cac_models::CheckpointSource::OfficialCAC);
    cac_models::ModelOptions options;
    options.num_classes = json["num_classes"].get<int64_t>();
    options.cac = json["cac"].get<bool>();
    auto model = cac_models::make_model(json["model"].get<std::string>(), options);
    const auto report = cac::io::load_state_dict(*model, weights, cac::io::LoadOptions().strict(false));
    std::cout << argv[i] << ": " << report << "\n";
    if (!report.ok()) ++failures;
  }
  std::cout << (failures ? "cac-zoo-keys-check: FAILED" : "cac-zoo-keys-check: ok") << "\n";
  return failures ? 1 : 0;
}
