// cac-infer CONFIG CHECKPOINT IMAGE|DIR... [--checkpoint-source mmseg|cac|...] [--out-dir DIR] [--opacity 0.5]
//           [--max-memory GB] [--set key=value ...] [--device ...]
// Segments images with any checkpoint (cac-train's, or an mmseg / official CAC .pth) and writes, per
// image, a colour-palette mask and an overlay (`<stem>.png`, `<stem>_overlay.png`; `<stem>_2...` for
// a repeated stem). Needs only the config, the checkpoint and the images: class names and palette
// come from the config's data.type, no dataset is read. A directory stands for its images (sorted,
// not recursive). Never writes over an input.
#include "engine/cli.hpp"
#include "engine/trainer.hpp"
#include "engine/weights.hpp"

#include "data/transforms.hpp"
#include "eval/image_inputs.hpp"
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

// Throws unless the test pipeline's resize leaves `file` at least one pixel per side (a 3000×2
// image at img_scale {64, 64} would become 64×0, which OpenCV refuses without naming the file).
void check_test_size(const std::string& file, const cv::Mat& image, const cac_data::TestPipelineOptions& pipeline) {
  const auto [width, height] = cac_data::rescale_size(image.cols, image.rows, pipeline.img_scale());
  TORCH_CHECK(width > 0 && height > 0,
              "expected an image that keeps at least one pixel per side at the test scale, "
              "but ",
              file, " (", image.cols, "x", image.rows, ", width x height) becomes ", width, "x", height,
              " at data.test_pipeline.img_scale [", pipeline.img_scale()[0], ", ", pipeline.img_scale()[1],
              "]; crop or pad it to a less extreme aspect ratio");
}

// Throws when inference of `file` would need more than `limit` bytes (0: no limit) for its class
// scores at the image's size (predict resizes them to the input's size in whole and slide mode).
void check_memory(const std::string& file, const cv::Mat& image, int64_t num_classes,
                  const cac_eval::InferenceOptions& inference, int64_t limit, bool limit_given) {
  const int64_t views = int64_t(inference.scales().size()) * (inference.flip() ? 2 : 1);
  const int64_t bytes = cac_eval::inference_score_bytes(num_classes, image.rows, image.cols, views);
  TORCH_CHECK(
      limit <= 0 || bytes <= limit, "expected ", file, " (", image.cols, "x", image.rows,
      ") to fit in memory but segmenting it needs about ", fmt::format("{:.1f}", double(bytes) / 1e9),
      " GB for the class scores at the image's size (", num_classes, " classes x ", image.cols, " x ", image.rows,
      " float32, ", views > 1 ? "3" : "2", " copies: resized and softmax, whatever evaluation.mode) while ",
      fmt::format("{:.1f}", double(limit) / 1e9), " GB ", limit_given ? "are allowed (--max-memory)" : "are available",
      "; segment a downscaled copy of the image (the masks have the input's size), or raise --max-memory");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("cac-infer: segment images and write palette masks and overlays");
  std::string config_file, checkpoint, checkpoint_source, out_dir = "predictions", device = "cpu";
  std::vector<std::string> arguments, overrides;
  double opacity = 0.5, max_memory = 0.0;
  app.add_option("config", config_file, "config file (YAML)")->required()->check(CLI::ExistingFile);
  app.add_option("checkpoint", checkpoint,
                 "checkpoint: cac-train's (latest.pt, best.pt, iter_N.pt) or a PyTorch .pth (zip or legacy torch.save)")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("images", arguments,
                 "images to segment; a directory stands for its images (.jpg, .png, ...), sorted by name, not "
                 "recursive")
      ->required()
      ->check(CLI::ExistingPath);
  cac_engine::add_checkpoint_source_option(app, checkpoint_source);
  app.add_option("--out-dir", out_dir, "output directory");
  app.add_option("--opacity", opacity, "overlay opacity")->check(CLI::Range(0.0, 1.0));
  app.add_option("--max-memory", max_memory,
                 "refuse an image whose inference needs more than this many GB (default: the memory available)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--set", overrides, "override a config key: key.sub=value (repeatable)");
  app.add_option("--device", device, "cpu, cuda or cuda:N");
  CLI11_PARSE(app, argc, argv);
  return cac_engine::run_program("cac-infer", [&] {
    const std::filesystem::path dir(out_dir);
    const std::vector<std::string> images = cac_eval::expand_image_arguments(arguments);
    const std::vector<std::string> names = output_names(images, dir);
    const auto config = cac_engine::Config::load(config_file, overrides);
    const auto target = cac_engine::parse_device(device);
    const auto info = cac_engine::dataset_info(config);  // from data.type: no dataset needed
    auto model = cac_engine::build_model(config);
    fmt::print("{}\n", cac_engine::load_checkpoint(*model, checkpoint, checkpoint_source, /*strict=*/true));
    model->to(target);
    model->eval();
    const auto pipeline = cac_engine::test_pipeline(config);
    const auto inference = cac_engine::inference_options(config);
    const int64_t limit = max_memory > 0 ? int64_t(max_memory * 1e9) : cac_eval::available_memory_bytes();
    for (size_t i = 0; i < images.size(); ++i) {
      const std::string& file = images[i];
      cac_data::RawSample raw;
      raw.image = cv::imread(file, cv::IMREAD_COLOR);
      TORCH_CHECK(!raw.image.empty(), "expected an image file but could not decode ", file);
      raw.name = names[i];
      check_test_size(file, raw.image, pipeline);
      if (target.is_cpu())
        check_memory(file, raw.image, config.get<int64_t>("model.num_classes"), inference, limit, max_memory > 0);
      try {
        const cac_data::Sample sample = cac_data::test_transform(raw, pipeline);
        const torch::Tensor mask =
            cac_eval::predict(model, sample.image.unsqueeze(0).to(target), inference, {raw.image.rows, raw.image.cols});
        cac_eval::write_prediction(dir, raw.name, raw.image, mask, info.palette, opacity);
      } catch (const std::exception& e) {
        const std::string message = cac_engine::error_message(e);
        const bool memory = message.find("allocate") != std::string::npos || dynamic_cast<const std::bad_alloc*>(&e);
        throw std::runtime_error(fmt::format("while segmenting {} ({}x{}): {}{}", file, raw.image.cols, raw.image.rows,
                                             message,
                                             memory ? "; the image needs more memory than is free: segment a "
                                                      "downscaled copy, or evaluation.mode=slide for a large test scale"
                                                    : ""));
      }
      fmt::print("{} -> {}\n", file, (dir / (raw.name + "_overlay.png")).string());
    }
  });
}
