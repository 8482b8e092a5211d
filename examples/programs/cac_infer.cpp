// cac-infer CONFIG CKPT IMAGE... [--out-dir DIR] [--opacity 0.5] [--device ...]
// Segments images with a checkpoint and writes, per image, a colour-palette mask and an overlay
// (`<stem>.png`, `<stem>_overlay.png`; `<stem>_2...` for a repeated stem). Never writes over an input.
#include "engine/cli.hpp"
#include "engine/trainer.hpp"

#include "data/transforms.hpp"
#include "eval/visualize.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <opencv2/imgcodecs.hpp>

#include <set>

namespace {

// The output name of each input: its stem, with "_2", "_3", ... for later inputs whose stem is
// taken, so inputs of the same name (sub1/x.png, sub2/x.png) keep distinct outputs. Throws when an
// output would be one of the inputs (--out-dir being an input's folder).
std::vector<std::string> output_names(const std::vector<std::string>& images, const std::filesystem::path& dir) {
  std::set<std::string> taken;
  std::vector<std::string> names;
  for (const auto& file : images) {
    const std::string stem = std::filesystem::path(file).stem().string();
    std::string name = stem;
    for (int n = 2; taken.count(name) > 0; ++n) name = stem + "_" + std::to_string(n);
    taken.insert(name);
    for (const char* suffix : {".png", "_overlay.png"}) {
      const std::filesystem::path out = dir / (name + suffix);
      for (const auto& input : images) {
        std::error_code missing;
        TORCH_CHECK(!std::filesystem::equivalent(out, input, missing),
                    "expected outputs beside the inputs, not over them, but ", out.string(), " is the input ", input,
                    "; choose another --out-dir");
      }
    }
    names.push_back(name);
  }
  return names;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("cac-infer: segment images and write palette masks and overlays");
  std::string config_file, checkpoint, out_dir = "predictions", device = "cpu";
  std::vector<std::string> images, overrides;
  double opacity = 0.5;
  app.add_option("config", config_file, "config file (YAML)")->required()->check(CLI::ExistingFile);
  app.add_option("checkpoint", checkpoint, "checkpoint of cac-train")->required()->check(CLI::ExistingFile);
  app.add_option("images", images, "images to segment")->required()->check(CLI::ExistingFile);
  app.add_option("--out-dir", out_dir, "output directory");
  app.add_option("--opacity", opacity, "overlay opacity")->check(CLI::Range(0.0, 1.0));
  app.add_option("--set", overrides, "override a config key: key.sub=value (repeatable)");
  app.add_option("--device", device, "cpu, cuda or cuda:N");
  CLI11_PARSE(app, argc, argv);
  return cac_engine::run_program("cac-infer", [&] {
    const std::filesystem::path dir(out_dir);
    const std::vector<std::string> names = output_names(images, dir);
    const auto config = cac_engine::Config::load(config_file, overrides);
    const auto target = cac_engine::parse_device(device);
    auto model = cac_engine::build_model(config);
    cac_engine::load_weights(*model, checkpoint);
    model->to(target);
    model->eval();
    const auto pipeline = cac_engine::test_pipeline(config);
    const auto inference = cac_engine::inference_options(config);
    const auto info = cac_engine::dataset_info(config);
    for (size_t i = 0; i < images.size(); ++i) {
      const std::string& file = images[i];
      cac_data::RawSample raw;
      raw.image = cv::imread(file, cv::IMREAD_COLOR);
      TORCH_CHECK(!raw.image.empty(), "expected an image file but could not decode ", file);
      raw.name = names[i];
      const cac_data::Sample sample = cac_data::test_transform(raw, pipeline);
      const torch::Tensor mask =
          cac_eval::predict(model, sample.image.unsqueeze(0).to(target), inference, {raw.image.rows, raw.image.cols});
      cac_eval::write_prediction(dir, raw.name, raw.image, mask, info.palette, opacity);
      fmt::print("{} -> {}\n", file, (dir / (raw.name + "_overlay.png")).string());
    }
  });
}
