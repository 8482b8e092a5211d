// cac_data::make_dataset on tiny fixtures in every real layout, written by the tests with
// cv::imwrite; class tables spot-checked against mmsegmentation 0.x's dataset files.

#include "data_test_support.hpp"

#include "data/context_shift.hpp"
#include "data/dataset.hpp"

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <fstream>
#include <set>

using namespace cac_data;
using cac_data_test::constant_label;
using cac_data_test::TempDir;
using cac_data_test::write;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

cv::Mat gray_image(int height, int width, int value) {
  return cv::Mat(height, width, CV_8UC3, cv::Scalar(value, value, value));
}

/// A label with the given values in its first pixels (row 0), 0 elsewhere.
cv::Mat label_with(std::initializer_list<int> values, int height = 6, int width = 8) {
  cv::Mat label = constant_label(height, width, 0);
  int x = 0;
  for (int v : values) {
    label.at<uint8_t>(0, x++) = static_cast<uint8_t>(v);
  }
  return label;
}

}  // namespace

TEST_CASE("class names and palettes follow mmsegmentation 0.x", "[dataset]") {
  CHECK(ade20k_info().num_classes() == 150);
  CHECK(ade20k_info().classes.front() == "wall");
  CHECK(ade20k_info().classes[7] == "bed ");  // mmseg's trailing space
  CHECK(ade20k_info().classes.back() == "flag");
  CHECK(ade20k_info().palette.front() == Rgb{120, 120, 120});
  CHECK(ade20k_info().palette.back() == Rgb{92, 0, 255});
  CHECK(coco_stuff164k_info().num_classes() == 171);
  CHECK(coco_stuff164k_info().classes.front() == "person");
  CHECK(coco_stuff164k_info().classes.back() == "wood");
  CHECK(coco_stuff164k_info().palette.back() == Rgb{64, 64, 0});
  CHECK(cityscapes_info().num_classes() == 19);
  CHECK(cityscapes_info().classes[10] == "sky");
  CHECK(cityscapes_info().palette.front() == Rgb{128, 64, 128});
  CHECK(cityscapes_info().palette.back() == Rgb{119, 11, 32});
  CHECK(pascal_context59_info().num_classes() == 59);
  CHECK(pascal_context59_info().classes.front() == "aeroplane");
  CHECK(pascal_context59_info().classes.back() == "wood");
  CHECK(pascal_context59_info().palette.front() == Rgb{180, 120, 120});
  for (const DatasetInfo* info :
       {&ade20k_info(), &coco_stuff164k_info(), &cityscapes_info(), &pascal_context59_info()}) {
    CHECK(info->palette.size() == info->classes.size());
  }
  const auto palette = default_palette(20);
  CHECK(palette.size() == 20);
  CHECK(palette[0] == Rgb{128, 0, 0});  // Pascal VOC's colour map, entry 1
  CHECK(std::set<Rgb>(palette.begin(), palette.end()).size() == 20);
}

TEST_CASE("ADE20K layout: both roots, sorted files, reduce_zero_label", "[dataset]") {
  TempDir dir;
  const auto base = dir.path() / "ADEChallengeData2016";
  write(base / "images/training/ADE_train_00000002.jpg", gray_image(6, 8, 50));
  write(base / "images/training/ADE_train_00000001.jpg", gray_image(6, 8, 60));
  write(base / "annotations/training/ADE_train_00000001.png", label_with({0, 1, 150, 255}));
  write(base / "annotations/training/ADE_train_00000002.png", label_with({151}));
  write(base / "images/validation/ADE_val_00000001.jpg", gray_image(5, 7, 70));
  write(base / "annotations/validation/ADE_val_00000001.png", constant_label(5, 7, 3));

  for (const auto& root : {dir.path(), base}) {
    const auto train = make_dataset(DatasetOptions("ade20k", root.string()));
    REQUIRE(train->size() == 2);
    CHECK(train->info().num_classes() == 150);
    CHECK(train->image_path(0) == (base / "images/training/ADE_train_00000001.jpg").string());
    const RawSample sample = train->load(0);
    CHECK(sample.name == "ADE_train_00000001");
    CHECK(sample.image.type() == CV_8UC3);
    CHECK(sample.image.rows == 6);
    CHECK(sample.image.cols == 8);
    CHECK(static_cast<int>(sample.label.at<uint8_t>(0, 0)) == 255);  // 0 → ignored
    CHECK(static_cast<int>(sample.label.at<uint8_t>(0, 1)) == 0);    // 1 → 0
    CHECK(static_cast<int>(sample.label.at<uint8_t>(0, 2)) == 149);  // 150 → 149
    CHECK(static_cast<int>(sample.label.at<uint8_t>(0, 3)) == 255);  // 255 stays
    // 151 reduces to 150 = num_classes: an error naming the file, the value and the position.
    CHECK_THROWS_WITH(train->load(1), Contains("ADE_train_00000002.png") && Contains("[0, 150) or 255") &&
                                          Contains("but got 150 (stored value 151) at x=0, y=0"));
    const auto val = make_dataset(DatasetOptions("ade20k", root.string()).split("val"));
    REQUIRE(val->size() == 1);
    CHECK(static_cast<int>(val->load(0).label.at<uint8_t>(2, 2)) == 2);
  }
  SECTION("reduce_zero_label can be switched off") {
    write(base / "annotations/training/ADE_train_00000001.png", label_with({0, 1, 149}));
    const auto raw = make_dataset(DatasetOptions("ade20k", dir.path().string()).reduce_zero_label(false));
    const RawSample sample = raw->load(0);
    CHECK(static_cast<int>(sample.label.at<uint8_t>(0, 0)) == 0);
    CHECK(static_cast<int>(sample.label.at<uint8_t>(0, 1)) == 1);
  }
  SECTION("an image without its label") {
    write(base / "images/training/ADE_train_00000003.jpg", gray_image(6, 8, 50));
    CHECK_THROWS_WITH(make_dataset(DatasetOptions("ade20k", dir.path().string())),
                      Contains("expected the label ") && Contains("annotations/training/ADE_train_00000003.png") &&
                          Contains("ADE_train_00000003.jpg but it does not exist"));
  }
  SECTION("a label of another size") {
    write(base / "annotations/training/ADE_train_00000002.png", constant_label(3, 3, 1));
    const auto train = make_dataset(DatasetOptions("ade20k", dir.path().string()));
    CHECK_THROWS_WITH(train->load(1), Contains("ADE_train_00000002.png to have the image's size 8x6 but got 3x3"));
  }
  SECTION("a bad split, an index out of range, an unknown type") {
    CHECK_THROWS_WITH(make_dataset(DatasetOptions("ade20k", dir.path().string()).split("test")),
                      Contains("expected split 'train' or 'val' for ade20k but got 'test'"));
    const auto train = make_dataset(DatasetOptions("ade20k", dir.path().string()));
    CHECK_THROWS_WITH(train->load(2), Contains("expected an index below 2 but got 2"));
    CHECK_THROWS_WITH(make_dataset(DatasetOptions("ade", dir.path().string())), Contains("but got 'ade'"));
  }
}

TEST_CASE("a missing directory names it", "[dataset]") {
  TempDir dir;
  CHECK_THROWS_AS(make_dataset(DatasetOptions("ade20k", dir.path().string())), c10::Error);
  CHECK_THROWS_WITH(
      make_dataset(DatasetOptions("ade20k", dir.path().string())),
      Contains("expected the image directory " + (dir.path() / "images/training").string() + " but it does not exist"));
  CHECK_THROWS_WITH(make_dataset(DatasetOptions("cityscapes", dir.path().string()).split("val")),
                    Contains((dir.path() / "leftImg8bit/val").string()));
  fs::create_directories(dir.path() / "images/train2017");
  CHECK_THROWS_WITH(make_dataset(DatasetOptions("coco_stuff164k", dir.path().string())),
                    Contains("expected the annotation directory " + (dir.path() / "annotations/train2017").string()));
  fs::create_directories(dir.path() / "annotations/train2017");
  CHECK_THROWS_WITH(make_dataset(DatasetOptions("coco_stuff164k", dir.path().string())),
                    Contains("expected images ending in '.jpg' under") && Contains("but found none"));
}

TEST_CASE("COCO-Stuff 164K layout keeps train ids 0..170", "[dataset]") {
  TempDir dir;
  write(dir.path() / "images/val2017/000000000139.jpg", gray_image(4, 4, 10));
  write(dir.path() / "annotations/val2017/000000000139_labelTrainIds.png", label_with({0, 170, 255}, 4, 4));
  write(dir.path() / "images/train2017/000000000009.jpg", gray_image(4, 4, 10));
  write(dir.path() / "annotations/train2017/000000000009_labelTrainIds.png", label_with({171}, 4, 4));
  const auto val = make_dataset(DatasetOptions("coco_stuff164k", dir.path().string()).split("val"));
  REQUIRE(val->size() == 1);
  const RawSample sample = val->load(0);
  CHECK(sample.name == "000000000139");
  CHECK(static_cast<int>(sample.label.at<uint8_t>(0, 0)) == 0);
  CHECK(static_cast<int>(sample.label.at<uint8_t>(0, 1)) == 170);
  CHECK(static_cast<int>(sample.label.at<uint8_t>(0, 2)) == 255);
  const auto train = make_dataset(DatasetOptions("coco_stuff164k", dir.path().string()));
  CHECK_THROWS_WITH(train->load(0), Contains("000000000009_labelTrainIds.png") && Contains("but got 171"));
}

TEST_CASE("Cityscapes layout: per-city folders, names keep the city", "[dataset]") {
  TempDir dir;
  for (const char* stem : {"zurich/zurich_000001_000019", "aachen/aachen_000000_000019"}) {
    write(dir.path() / "leftImg8bit/train" / (std::string(stem) + "_leftImg8bit.png"), gray_image(4, 8, 20));
    write(dir.path() / "gtFine/train" / (std::string(stem) + "_gtFine_labelTrainIds.png"), label_with({18, 255}, 4, 8));
  }
  // The other files of mmseg's converted gtFine tree stay beside the train ids and are not read.
  write(dir.path() / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png", label_with({33}, 4, 8));
  write(dir.path() / "gtFine/train/aachen/aachen_000000_000019_gtFine_color.png", gray_image(4, 8, 20));
  write(dir.path() / "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png", gray_image(4, 8, 20));
  write(dir.path() / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png", label_with({0}, 4, 8));
  const auto train = make_dataset(DatasetOptions("cityscapes", dir.path().string()));
  REQUIRE(train->size() == 2);
  CHECK(train->info().num_classes() == 19);
  CHECK(train->load(0).name == "aachen/aachen_000000_000019");
  CHECK(train->load(1).name == "zurich/zurich_000001_000019");
  CHECK(train->image_path(0) ==
        (dir.path() / "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png").string());
  CHECK(static_cast<int>(train->load(0).label.at<uint8_t>(0, 0)) == 18);
  CHECK(static_cast<int>(train->load(0).label.at<uint8_t>(0, 1)) == 255);  // no reduce_zero_label
  CHECK(static_cast<int>(train->load(0).label.at<uint8_t>(1, 0)) == 0);
  const auto val = make_dataset(DatasetOptions("cityscapes", dir.path().string()).split("val"));
  REQUIRE(val->size() == 1);
  CHECK(val->load(0).name == "frankfurt/frankfurt_000000_000294");
  write(dir.path() / "leftImg8bit/train/bonn/bonn_000000_000019_leftImg8bit.png", gray_image(4, 8, 20));
  CHECK_THROWS_WITH(make_dataset(DatasetOptions("cityscapes", dir.path().string())),
                    Contains("gtFine/train/bonn/bonn_000000_000019_gtFine_labelTrainIds.png"));
}

TEST_CASE("Pascal-Context 59 layout: split files, zero reduced", "[dataset]") {
  TempDir dir;
  write(dir.path() / "JPEGImages/2008_000002.jpg", gray_image(4, 4, 20));
  write(dir.path() / "JPEGImages/2008_000003.jpg", gray_image(4, 4, 20));
  write(dir.path() / "SegmentationClassContext/2008_000002.png", label_with({0, 1, 59}, 4, 4));
  write(dir.path() / "SegmentationClassContext/2008_000003.png", label_with({60}, 4, 4));
  fs::create_directories(dir.path() / "ImageSets/SegmentationContext");
  std::ofstream(dir.path() / "ImageSets/SegmentationContext/train.txt") << "2008_000003\n2008_000002\n\n";
  std::ofstream(dir.path() / "ImageSets/SegmentationContext/val.txt") << "2008_000004\n";
  const auto train = make_dataset(DatasetOptions("pascal_context59", dir.path().string()));
  REQUIRE(train->size() == 2);
  CHECK(train->info().num_classes() == 59);
  CHECK(train->load(1).name == "2008_000002");  // the split file's order
  const RawSample sample = train->load(1);
  CHECK(static_cast<int>(sample.label.at<uint8_t>(0, 0)) == 255);
  CHECK(static_cast<int>(sample.label.at<uint8_t>(0, 1)) == 0);
  CHECK(static_cast<int>(sample.label.at<uint8_t>(0, 2)) == 58);
  CHECK_THROWS_WITH(train->load(0), Contains("2008_000003.png") && Contains("but got 59 (stored value 60)"));
  CHECK_THROWS_WITH(make_dataset(DatasetOptions("pascal_context59", dir.path().string()).split("val")),
                    Contains("SegmentationClassContext/2008_000004.png"));
}

TEST_CASE("custom layout: directories, suffixes, classes", "[dataset]") {
  TempDir dir;
  write(dir.path() / "img/a/x.jpg", gray_image(4, 4, 20));
  write(dir.path() / "ann/a/x_mask.png", label_with({2, 255}, 4, 4));
  const auto options =
      DatasetOptions("custom", dir.path().string()).img_dir("img").ann_dir("ann").seg_map_suffix("_mask.png");
  CHECK_THROWS_WITH(make_dataset(options), Contains("expected the class names (classes) of a custom dataset"));
  const auto dataset = make_dataset(DatasetOptions(options).classes({"a", "b", "c"}));
  REQUIRE(dataset->size() == 1);
  CHECK(dataset->info().palette.size() == 3);
  CHECK(dataset->load(0).name == "a/x");
  CHECK(static_cast<int>(dataset->load(0).label.at<uint8_t>(0, 0)) == 2);
  CHECK_THROWS_WITH(make_dataset(DatasetOptions(options).classes({"a", "b"}).palette({Rgb{1, 2, 3}})),
                    Contains("expected 2 palette colours (one per class) but got 1"));
  CHECK_THROWS_WITH(make_dataset(DatasetOptions(options).classes({"a", "b"}))->load(0),
                    Contains("x_mask.png") && Contains("but got 2"));
}
