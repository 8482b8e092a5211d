// cac-info NAME [--cac] [--num-classes N]: builds a model of the zoo, prints its summary and
// ends with `parameters: N` (every parameter: backbone, decode heads, auxiliary head and, with
// --cac, both CAC projectors, as the paper's Table 1 counts them).
#include "models/registry.hpp"

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <cstdint>
#include <iomanip>
#include <iostream>
#include <locale>
#include <sstream>
#include <string>

namespace {

int64_t count(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

// 12345678 → "12,345,678".
std::string grouped(int64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

void row(const std::string& label, int64_t n, int64_t total) {
  std::cout << "  " << std::left << std::setw(34) << label << std::right << std::setw(13) << grouped(n) << "  ("
            << std::fixed << std::setprecision(1) << 100.0 * static_cast<double>(n) / static_cast<double>(total)
            << "%)\n";
}

void print_head(const std::string& key, const cac_models::DecodeHeadImpl& head, int64_t total) {
  row(key, count(head), total);
  std::ostringstream printed;
  head.pretty_print(printed);
  std::cout << "    " << printed.str() << "\n";
  if (head.cac) row(key + ".cac (both projectors)", count(*head.cac), total);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Builds a model of the cac model zoo and prints its summary and parameter count."};
  std::string name;
  bool cac = false, list = false, tree = false;
  int64_t num_classes = 150;
  std::string names_help = "model name, one of:";
  for (const auto& n : cac_models::model_names()) names_help += " " + n;
  app.add_option("NAME", name, names_help);
  app.add_flag("--cac", cac, "add the context-aware classifier (CAC) to the decode head");
  app.add_option("--num-classes", num_classes, "number of classes (150: ADE20K)")->check(CLI::PositiveNumber);
  app.add_flag("--list", list, "list the model names and exit");
  app.add_flag("--tree", tree, "also print the whole module tree");
  CLI11_PARSE(app, argc, argv);

  if (list) {
    for (const auto& n : cac_models::model_names()) {
      std::cout << std::left << std::setw(28) << n << cac_models::model_description(n) << "\n";
    }
    return 0;
  }
  if (name.empty()) {
    std::cerr << app.help() << "\nerror: NAME is required\n";
    return 2;
  }

  try {
    cac_models::EncoderDecoder model = cac_models::make_model(name, {num_classes, cac});
    const int64_t total = count(*model);
    std::cout << "model: " << name << (cac ? " + CAC" : "") << ", " << num_classes << " classes\n"
              << "  " << cac_models::model_description(name) << "\n";
    row("backbone", count(*model->backbone), total);
    if (model->is_cascade()) {
      const auto& heads = model->decode_heads();
      for (size_t i = 0; i < heads.size(); ++i) print_head("decode_head." + std::to_string(i), *heads[i], total);
    } else {
      print_head("decode_head", *model->decode_head, total);
    }
    if (model->auxiliary_head) print_head("auxiliary_head", *model->auxiliary_head, total);
    int64_t tensors = 0;
    for (const auto& p : model->parameters()) tensors += p.defined() ? 1 : 0;
    std::cout << "  parameter tensors: " << tensors << ", buffers: " << model->buffers().size() << "\n";
    if (tree) std::cout << *model << "\n";
    std::cout << "parameters: " << total << std::endl;
  } catch (const c10::Error& error) {
    std::cerr << "cac-info: " << error.what_without_backtrace() << "\n";
    return 1;
  }
  return 0;
}
