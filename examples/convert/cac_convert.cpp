// cac-convert IN.pth OUT.pth --from mmseg|cac|backbone|mmcls|swin|torchvision [--model NAME [--cac]
//             [--num-classes N] [--strict]] [--entry KEY]
//
// Reads a PyTorch checkpoint without Python, renames its keys as cac's model zoo names them
// (cac_models::convert_state_dict, examples/models/converters.hpp), optionally loads it into a
// zoo model and prints the report (missing / unexpected / shape-mismatched keys), and writes OUT
// as a plain dict of tensors that both cac and Python's torch.load read.
//
// Exit codes: 0 written; 1 --strict and the model does not match (nothing written, an existing OUT
// is left as it was); 2 an error (unreadable input, OUT equal to IN, a failed write: nothing
// written); CLI11's own codes for command-line errors (--strict needs --model). OUT is written to
// OUT.tmp beside it, checked and renamed (cac::io::write_state_dict), so it is never half-written.

#include <cac/io/io.hpp>
#include <models/converters.hpp>
#include <models/registry.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <system_error>
#include <sstream>
#include <string>

namespace {

/// Whether `out` names the file `in` (the same path spelt differently, a hard or symbolic link).
bool same_file(const std::string& in, const std::string& out) {
  std::error_code error;
  if (std::filesystem::equivalent(in, out, error)) return true;
  const auto a = std::filesystem::weakly_canonical(in, error);
  if (error) return false;
  const auto b = std::filesystem::weakly_canonical(out, error);
  return !error && a == b;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cac-convert: bring mmsegmentation / official CAC / ImageNet checkpoints to cac's model zoo"};
  std::string in, out, from = "mmseg", model_name, entry;
  bool with_cac = false, strict = false;
  int64_t num_classes = 150;
  app.add_option("IN", in, "input checkpoint (torch.save zip format)")->required();
  app.add_option("OUT", out, "output checkpoint (a dict of tensors)")->required();
  std::ostringstream sources;
  for (const auto& name : cac_models::checkpoint_source_names()) sources << (sources.tellp() > 0 ? " | " : "") << name;
  app.add_option("--from", from, sources.str())->capture_default_str();
  auto* model_option = app.add_option("--model", model_name, "load into this zoo model and report (see cac-info)");
  app.add_flag("--cac", with_cac, "the model has the context-aware classifier");
  app.add_option("--num-classes", num_classes, "classes of the model")->capture_default_str();
  app.add_flag("--strict", strict, "fail (exit 1, nothing written) unless every key and shape matches the model")
      ->needs(model_option);
  app.add_option("--entry", entry, "top-level entry holding the state dict (default: state_dict/model/module/top)");
  CLI11_PARSE(app, argc, argv);
  if (same_file(in, out)) {
    std::cerr << "cac-convert: OUT " << out << " is the input checkpoint " << in
              << "; write the converted checkpoint to another path\n";
    return 2;
  }
  try {
    const auto source = cac_models::checkpoint_source(from);
    const auto checkpoint = cac::io::read_checkpoint(in);
    const auto weights = checkpoint.state_dict(cac::io::ReadOptions().entry(entry));
    const auto converted = cac_models::convert_state_dict(weights, source);
    std::cout << "read " << weights.size() << " tensors from " << in << " (" << source << "), " << converted.size()
              << " after conversion\n";
    if (const auto* meta = checkpoint.root()->find("meta")) std::cout << "meta: " << meta->repr(2, 6) << "\n";
    bool matched = true;
    if (!model_name.empty()) {
      cac_models::ModelOptions options;
      options.num_classes = num_classes;
      options.cac = with_cac;
      auto model = cac_models::make_model(model_name, options);
      const auto report = cac::io::load_state_dict(*model, converted, cac::io::LoadOptions().strict(false));
      std::cout << model_name << (with_cac ? " + CAC" : "") << ": " << report << "\n";
      matched = report.ok();
    }
    if (strict && !matched) {
      std::cerr << "cac-convert: --strict: the checkpoint does not match " << model_name
                << " (see the report above); nothing written to " << out << "\n";
      return 1;
    }
    cac::io::write_state_dict(converted, out);  // OUT.tmp, checked, then renamed; removed on failure
    std::cout << "wrote " << out << "\n";
    return 0;
  } catch (const c10::Error& e) {
    std::cerr << "cac-convert: " << e.msg() << "\n";
    return 2;
  }
}
