// The data loader against the training step it feeds (issue 4: the loader alone must deliver
// batches at least 3× faster than the FCN-MobileNetV2 training step consumes them).
//
//   BM_LoaderBatch   one batch of 2 from cac_data::TrainLoader: 16 ADE20K-layout JPEG images of
//                    640×480, mmseg's ADE20K training pipeline (random resize of 2048×512 by
//                    0.5-2.0, 512×512 crop, flip, photometric distortion, normalisation), 2 workers
// main.cpp compares it with BM_ModelTrain/fcn_mobilenetv2/512 (batch 2) of bench_models.cpp.

#include "data/loader.hpp"

#include <benchmark/benchmark.h>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>

#include <filesystem>

namespace {

std::filesystem::path make_ade_layout() {
  const auto root = std::filesystem::temp_directory_path() / "cac_bench_loader" / "ADEChallengeData2016";
  std::filesystem::remove_all(root.parent_path());
  for (const char* split : {"training", "validation"}) {
    std::filesystem::create_directories(root / "images" / split);
    std::filesystem::create_directories(root / "annotations" / split);
  }
  cv::RNG rng(0);
  for (int i = 0; i < 16; ++i) {
    cv::Mat image(480, 640, CV_8UC3), label(480, 640, CV_8UC1);
    rng.fill(image, cv::RNG::UNIFORM, 0, 255);
    for (int y = 0; y < label.rows; ++y) {
      for (int x = 0; x < label.cols; ++x) label.at<uint8_t>(y, x) = static_cast<uint8_t>((x / 40 + y / 40 * 7) % 151);
    }
    const std::string name = "ADE_train_" + std::to_string(10000000 + i);
    cv::imwrite((root / "images/training" / (name + ".jpg")).string(), image);
    cv::imwrite((root / "annotations/training" / (name + ".png")).string(), label);
  }
  return root.parent_path();
}

void BM_LoaderBatch(benchmark::State& state) {
  const auto root = make_ade_layout();
  auto dataset = cac_data::make_dataset(cac_data::DatasetOptions("ade20k", root.string()).split("train"));
  cac_data::TrainLoader loader(dataset, cac_data::TrainPipelineOptions(),
                               cac_data::LoaderOptions().batch_size(2).num_workers(2).prefetch(4));
  benchmark::DoNotOptimize(loader.next().images.data_ptr());  // workers started, queue warm
  for (auto _ : state) benchmark::DoNotOptimize(loader.next().images.data_ptr());
  state.SetItemsProcessed(state.iterations() * 2);
}

}  // namespace

BENCHMARK(BM_LoaderBatch)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);
