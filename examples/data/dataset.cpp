#include "dataset.hpp"

#include "context_shift.hpp"

#include <torch/torch.h>

#include <opencv2/imgcodecs.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <utility>

namespace cac_data {

namespace fs = std::filesystem;

namespace {

// clang-format off
// Class names and palettes of mmsegmentation 0.x (mmseg/datasets/{ade,coco_stuff,cityscapes,
// pascal_context}.py), verbatim, including ADE20K's "bed " with its trailing space.
// ade20k: 150 classes.
const char* const k_ade20k_classes[] = {
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed ", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
};
const uint8_t k_ade20k_palette[][3] = {
    {120, 120, 120}, {180, 120, 120}, {6, 230, 230}, {80, 50, 50}, {4, 200, 3}, {120, 120, 80},
    {140, 140, 140}, {204, 5, 255}, {230, 230, 230}, {4, 250, 7}, {224, 5, 255}, {235, 255, 7},
    {150, 5, 61}, {120, 120, 70}, {8, 255, 51}, {255, 6, 82}, {143, 255, 140}, {204, 255, 4},
    {255, 51, 7}, {204, 70, 3}, {0, 102, 200}, {61, 230, 250}, {255, 6, 51}, {11, 102, 255},
    {255, 7, 71}, {255, 9, 224}, {9, 7, 230}, {220, 220, 220}, {255, 9, 92}, {112, 9, 255},
    {8, 255, 214}, {7, 255, 224}, {255, 184, 6}, {10, 255, 71}, {255, 41, 10}, {7, 255, 255},
    {224, 255, 8}, {102, 8, 255}, {255, 61, 6}, {255, 194, 7}, {255, 122, 8}, {0, 255, 20},
    {255, 8, 41}, {255, 5, 153}, {6, 51, 255}, {235, 12, 255}, {160, 150, 20}, {0, 163, 255},
    {140, 140, 140}, {250, 10, 15}, {20, 255, 0}, {31, 255, 0}, {255, 31, 0}, {255, 224, 0},
    {153, 255, 0}, {0, 0, 255}, {255, 71, 0}, {0, 235, 255}, {0, 173, 255}, {31, 0, 255},
    {11, 200, 200}, {255, 82, 0}, {0, 255, 245}, {0, 61, 255}, {0, 255, 112}, {0, 255, 133},
    {255, 0, 0}, {255, 163, 0}, {255, 102, 0}, {194, 255, 0}, {0, 143, 255}, {51, 255, 0},
    {0, 82, 255}, {0, 255, 41}, {0, 255, 173}, {10, 0, 255}, {173, 255, 0}, {0, 255, 153},
    {255, 92, 0}, {255, 0, 255}, {255, 0, 245}, {255, 0, 102}, {255, 173, 0}, {255, 0, 20},
    {255, 184, 184}, {0, 31, 255}, {0, 255, 61}, {0, 71, 255}, {255, 0, 204}, {0, 255, 194},
    {0, 255, 82}, {0, 10, 255}, {0, 112, 255}, {51, 0, 255}, {0, 194, 255}, {0, 122, 255},
    {0, 255, 163}, {255, 153, 0}, {0, 255, 10}, {255, 112, 0}, {143, 255, 0}, {82, 0, 255},
    {163, 255, 0}, {255, 235, 0}, {8, 184, 170}, {133, 0, 255}, {0, 255, 92}, {184, 0, 255},
    {255, 0, 31}, {0, 184, 255}, {0, 214, 255}, {255, 0, 112}, {92, 255, 0}, {0, 224, 255},
    {112, 224, 255}, {70, 184, 160}, {163, 0, 255}, {153, 0, 255}, {71, 255, 0}, {255, 0, 163},
    {255, 204, 0}, {255, 0, 143}, {0, 255, 235}, {133, 255, 0}, {255, 0, 235}, {245, 0, 255},
    {255, 0, 122}, {255, 245, 0}, {10, 190, 212}, {214, 255, 0}, {0, 204, 255}, {20, 0, 255},
    {255, 255, 0}, {0, 153, 255}, {0, 41, 255}, {0, 255, 204}, {41, 0, 255}, {41, 255, 0},
    {173, 0, 255}, {0, 245, 255}, {71, 0, 255}, {122, 0, 255}, {0, 255, 184}, {0, 92, 255},
    {184, 255, 0}, {0, 133, 255}, {255, 214, 0}, {25, 194, 194}, {102, 255, 0}, {92, 0, 255},
};
// coco_stuff164k: 171 classes.
const char* const k_coco_stuff164k_classes[] = {
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush", "banner", "blanket", "branch", "bridge",
    "building-other", "bush", "cabinet", "cage", "cardboard", "carpet", "ceiling-other",
    "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff",
    "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile",
    "floor-wood", "flower", "fog", "food-other", "fruit", "furniture-other", "grass", "gravel",
    "ground-other", "hill", "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss",
    "mountain", "mud", "napkin", "net", "paper", "pavement", "pillow", "plant-other", "plastic",
    "platform", "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug",
    "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs",
    "stone", "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree",
    "vegetable", "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone",
    "wall-tile", "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
};
const uint8_t k_coco_stuff164k_palette[][3] = {
    {0, 192, 64}, {0, 192, 64}, {0, 64, 96}, {128, 192, 192}, {0, 64, 64}, {0, 192, 224},
    {0, 192, 192}, {128, 192, 64}, {0, 192, 96}, {128, 192, 64}, {128, 32, 192}, {0, 0, 224},
    {0, 0, 64}, {0, 160, 192}, {128, 0, 96}, {128, 0, 192}, {0, 32, 192}, {128, 128, 224},
    {0, 0, 192}, {128, 160, 192}, {128, 128, 0}, {128, 0, 32}, {128, 32, 0}, {128, 0, 128},
    {64, 128, 32}, {0, 160, 0}, {0, 0, 0}, {192, 128, 160}, {0, 32, 0}, {0, 128, 128},
    {64, 128, 160}, {128, 160, 0}, {0, 128, 0}, {192, 128, 32}, {128, 96, 128}, {0, 0, 128},
    {64, 0, 32}, {0, 224, 128}, {128, 0, 0}, {192, 0, 160}, {0, 96, 128}, {128, 128, 128},
    {64, 0, 160}, {128, 224, 128}, {128, 128, 64}, {192, 0, 32}, {128, 96, 0}, {128, 0, 192},
    {0, 128, 32}, {64, 224, 0}, {0, 0, 64}, {128, 128, 160}, {64, 96, 0}, {0, 128, 192},
    {0, 128, 160}, {192, 224, 0}, {0, 128, 64}, {128, 128, 32}, {192, 32, 128}, {0, 64, 192},
    {0, 0, 32}, {64, 160, 128}, {128, 64, 64}, {128, 0, 160}, {64, 32, 128}, {128, 192, 192},
    {0, 0, 160}, {192, 160, 128}, {128, 192, 0}, {128, 0, 96}, {192, 32, 0}, {128, 64, 128},
    {64, 128, 96}, {64, 160, 0}, {0, 64, 0}, {192, 128, 224}, {64, 32, 0}, {0, 192, 128},
    {64, 128, 224}, {192, 160, 0}, {0, 192, 0}, {192, 128, 96}, {192, 96, 128}, {0, 64, 128},
    {64, 0, 96}, {64, 224, 128}, {128, 64, 0}, {192, 0, 224}, {64, 96, 128}, {128, 192, 128},
    {64, 0, 224}, {192, 224, 128}, {128, 192, 64}, {192, 0, 96}, {192, 96, 0}, {128, 64, 192},
    {0, 128, 96}, {0, 224, 0}, {64, 64, 64}, {128, 128, 224}, {0, 96, 0}, {64, 192, 192},
    {0, 128, 224}, {128, 224, 0}, {64, 192, 64}, {128, 128, 96}, {128, 32, 128}, {64, 0, 192},
    {0, 64, 96}, {0, 160, 128}, {192, 0, 64}, {128, 64, 224}, {0, 32, 128}, {192, 128, 192},
    {0, 64, 224}, {128, 160, 128}, {192, 128, 0}, {128, 64, 32}, {128, 32, 64}, {192, 0, 128},
    {64, 192, 32}, {0, 160, 64}, {64, 0, 0}, {192, 192, 160}, {0, 32, 64}, {64, 128, 128},
    {64, 192, 160}, {128, 160, 64}, {64, 128, 0}, {192, 192, 32}, {128, 96, 192}, {64, 0, 128},
    {64, 64, 32}, {0, 224, 192}, {192, 0, 0}, {192, 64, 160}, {0, 96, 192}, {192, 128, 128},
    {64, 64, 160}, {128, 224, 192}, {192, 128, 64}, {192, 64, 32}, {128, 96, 64}, {192, 0, 192},
    {0, 192, 32}, {64, 224, 64}, {64, 0, 64}, {128, 192, 160}, {64, 96, 64}, {64, 128, 192},
    {0, 192, 160}, {192, 224, 64}, {64, 128, 64}, {128, 192, 32}, {192, 32, 192}, {64, 64, 192},
    {0, 64, 32}, {64, 160, 192}, {192, 64, 64}, {128, 64, 160}, {64, 32, 192}, {192, 192, 192},
    {0, 64, 160}, {192, 160, 192}, {192, 192, 0}, {128, 64, 96}, {192, 32, 64}, {192, 64, 128},
    {64, 192, 96}, {64, 160, 64}, {64, 64, 0},
};
// cityscapes: 19 classes.
const char* const k_cityscapes_classes[] = {
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
};
const uint8_t k_cityscapes_palette[][3] = {
    {128, 64, 128}, {244, 35, 232}, {70, 70, 70}, {102, 102, 156}, {190, 153, 153}, {153, 153, 153},
    {250, 170, 30}, {220, 220, 0}, {107, 142, 35}, {152, 251, 152}, {70, 130, 180}, {220, 20, 60},
    {255, 0, 0}, {0, 0, 142}, {0, 0, 70}, {0, 60, 100}, {0, 80, 100}, {0, 0, 230}, {119, 11, 32},
};
// pascal_context59: 59 classes.
const char* const k_pascal_context59_classes[] = {
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow",
    "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground", "horse",
    "keyboard", "light", "motorbike", "mountain", "mouse", "person", "plate", "platform",
    "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky", "snow", "sofa",
    "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
};
const uint8_t k_pascal_context59_palette[][3] = {
    {180, 120, 120}, {6, 230, 230}, {80, 50, 50}, {4, 200, 3}, {120, 120, 80}, {140, 140, 140},
    {204, 5, 255}, {230, 230, 230}, {4, 250, 7}, {224, 5, 255}, {235, 255, 7}, {150, 5, 61},
    {120, 120, 70}, {8, 255, 51}, {255, 6, 82}, {143, 255, 140}, {204, 255, 4}, {255, 51, 7},
    {204, 70, 3}, {0, 102, 200}, {61, 230, 250}, {255, 6, 51}, {11, 102, 255}, {255, 7, 71},
    {255, 9, 224}, {9, 7, 230}, {220, 220, 220}, {255, 9, 92}, {112, 9, 255}, {8, 255, 214},
    {7, 255, 224}, {255, 184, 6}, {10, 255, 71}, {255, 41, 10}, {7, 255, 255}, {224, 255, 8},
    {102, 8, 255}, {255, 61, 6}, {255, 194, 7}, {255, 122, 8}, {0, 255, 20}, {255, 8, 41},
    {255, 5, 153}, {6, 51, 255}, {235, 12, 255}, {160, 150, 20}, {0, 163, 255}, {140, 140, 140},
    {250, 10, 15}, {20, 255, 0}, {31, 255, 0}, {255, 31, 0}, {255, 224, 0}, {153, 255, 0},
    {0, 0, 255}, {255, 71, 0}, {0, 235, 255}, {0, 173, 255}, {31, 0, 255},
};
// clang-format on

template <size_t N>
DatasetInfo make_info(const char* name, const char* const (&classes)[N], const uint8_t (&palette)[N][3]) {
  DatasetInfo info;
  info.name = name;
  for (size_t i = 0; i < N; ++i) {
    info.classes.emplace_back(classes[i]);
    info.palette.push_back({palette[i][0], palette[i][1], palette[i][2]});
  }
  return info;
}

/// An image file and its label file.
struct FilePair {
  fs::path image;
  fs::path label;
  std::string name;
};

/// Every dataset on disk: a list of (image, label) files and the label mapping.
class FileDataset : public Dataset {
 public:
  FileDataset(DatasetInfo info, std::vector<FilePair> files, bool reduce_zero_label)
      : info_(std::move(info)), files_(std::move(files)) {
    // Raw label value → train id (mmseg `LoadAnnotations`: 0 → 255, v → v - 1, 255 stays 255).
    for (int v = 0; v < 256; ++v) {
      lut_[v] = reduce_zero_label ? static_cast<uint8_t>(v == 0 || v == 255 ? 255 : v - 1) : static_cast<uint8_t>(v);
    }
  }

  size_t size() const override { return files_.size(); }
  const DatasetInfo& info() const override { return info_; }

  std::string image_path(size_t index) const override { return at(index).image.string(); }

  RawSample load(size_t index) const override {
    const FilePair& file = at(index);
    RawSample sample;
    sample.name = file.name;
    sample.image = cv::imread(file.image.string(), cv::IMREAD_COLOR);
    TORCH_CHECK(!sample.image.empty(), "cac_data::Dataset: expected a readable image at ", file.image.string(),
                " but cv::imread failed");
    const cv::Mat raw = cv::imread(file.label.string(), cv::IMREAD_UNCHANGED);
    TORCH_CHECK(!raw.empty(), "cac_data::Dataset: expected a readable label at ", file.label.string(),
                " but cv::imread failed");
    TORCH_CHECK(raw.type() == CV_8UC1, "cac_data::Dataset: expected an 8-bit single-channel label at ",
                file.label.string(), " but got ", raw.channels(), " channel(s) of OpenCV depth ", raw.depth());
    TORCH_CHECK(raw.rows == sample.image.rows && raw.cols == sample.image.cols,
                "cac_data::Dataset: expected the label ", file.label.string(), " to have the image's size ",
                sample.image.cols, "x", sample.image.rows, " but got ", raw.cols, "x", raw.rows);
    sample.label.create(raw.rows, raw.cols, CV_8UC1);
    const int64_t num_classes = info_.num_classes();
    for (int y = 0; y < raw.rows; ++y) {
      const uint8_t* in = raw.ptr<uint8_t>(y);
      uint8_t* out = sample.label.ptr<uint8_t>(y);
      for (int x = 0; x < raw.cols; ++x) {
        const uint8_t id = lut_[in[x]];
        TORCH_CHECK(id == kIgnoreIndex || id < num_classes, "cac_data::Dataset: expected label values in [0, ",
                    num_classes, ") or 255 in ", file.label.string(), " but got ", static_cast<int>(id),
                    " (stored value ", static_cast<int>(in[x]), ") at x=", x, ", y=", y);
        out[x] = id;
      }
    }
    return sample;
  }

 private:
  const FilePair& at(size_t index) const {
    TORCH_CHECK(index < files_.size(), "cac_data::Dataset: expected an index below ", files_.size(), " but got ",
                index);
    return files_[index];
  }

  DatasetInfo info_;
  std::vector<FilePair> files_;
  uint8_t lut_[256];
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

fs::path resolve(const fs::path& root, const std::string& path) {
  const fs::path p(path);
  return p.is_absolute() ? p : root / p;
}

void require_directory(const fs::path& dir, const char* what) {
  TORCH_CHECK(fs::is_directory(dir), "cac_data::make_dataset: expected the ", what, " directory ", dir.string(),
              " but it does not exist");
}

FilePair make_pair(const fs::path& img_dir, const fs::path& ann_dir, const std::string& name,
                   const std::string& img_suffix, const std::string& seg_map_suffix) {
  FilePair pair{img_dir / (name + img_suffix), ann_dir / (name + seg_map_suffix), name};
  TORCH_CHECK(fs::is_regular_file(pair.label), "cac_data::make_dataset: expected the label ", pair.label.string(),
              " of the image ", pair.image.string(), " but it does not exist");
  return pair;
}

/// Every image under `img_dir` (recursively) ending in `img_suffix`, sorted, with its label.
std::vector<FilePair> scan_pairs(const fs::path& img_dir, const fs::path& ann_dir, const std::string& img_suffix,
                                 const std::string& seg_map_suffix) {
  require_directory(img_dir, "image");
  require_directory(ann_dir, "annotation");
  std::vector<std::string> names;
  for (const auto& entry : fs::recursive_directory_iterator(img_dir)) {
    const std::string relative = entry.path().lexically_relative(img_dir).generic_string();
    if (entry.is_regular_file() && ends_with(relative, img_suffix)) {
      names.push_back(relative.substr(0, relative.size() - img_suffix.size()));
    }
  }
  TORCH_CHECK(!names.empty(), "cac_data::make_dataset: expected images ending in '", img_suffix, "' under ",
              img_dir.string(), " but found none");
  std::sort(names.begin(), names.end());
  std::vector<FilePair> pairs;
  for (const auto& name : names) {
    pairs.push_back(make_pair(img_dir, ann_dir, name, img_suffix, seg_map_suffix));
  }
  return pairs;
}

/// The samples named in `split_file` (one name per line, in the file's order, as mmseg reads it).
std::vector<FilePair> list_pairs(const fs::path& img_dir, const fs::path& ann_dir, const fs::path& split_file,
                                 const std::string& img_suffix, const std::string& seg_map_suffix) {
  require_directory(img_dir, "image");
  require_directory(ann_dir, "annotation");
  std::ifstream stream(split_file);
  TORCH_CHECK(stream.good(), "cac_data::make_dataset: expected the split file ", split_file.string(),
              " but it cannot be read");
  std::vector<FilePair> pairs;
  std::string line;
  while (std::getline(stream, line)) {
    const auto begin = line.find_first_not_of(" \t\r");
    if (begin == std::string::npos) {
      continue;
    }
    const std::string name = line.substr(begin, line.find_last_not_of(" \t\r") + 1 - begin);
    FilePair pair = make_pair(img_dir, ann_dir, name, img_suffix, seg_map_suffix);
    TORCH_CHECK(fs::is_regular_file(pair.image), "cac_data::make_dataset: expected the image ", pair.image.string(),
                " listed in ", split_file.string(), " but it does not exist");
    pairs.push_back(std::move(pair));
  }
  TORCH_CHECK(!pairs.empty(), "cac_data::make_dataset: expected sample names in ", split_file.string(),
              " but found none");
  return pairs;
}

/// A layout's directories, suffixes and defaults, resolved from the options.
struct Layout {
  fs::path img_dir, ann_dir, split_file;
  std::string img_suffix = ".jpg", seg_map_suffix = ".png";
  bool reduce_zero_label = false;
  DatasetInfo info;
};

std::string split_name(const DatasetOptions& options, const char* train, const char* val) {
  TORCH_CHECK(options.split() == "train" || options.split() == "val",
              "cac_data::make_dataset: expected split 'train' or 'val' for ", options.type(), " but got '",
              options.split(), "'");
  return options.split() == "train" ? train : val;
}

Layout resolve_layout(const DatasetOptions& options) {
  const fs::path root(options.root());
  const std::string& type = options.type();
  Layout layout;
  if (type == "ade20k" || type == "context_shift") {
    const fs::path base = fs::is_directory(root / "ADEChallengeData2016") ? root / "ADEChallengeData2016" : root;
    const std::string split = split_name(options, "training", "validation");
    layout.img_dir = base / "images" / split;
    layout.ann_dir = base / "annotations" / split;
    layout.reduce_zero_label = true;
    if (type == "ade20k") {
      layout.info = ade20k_info();
    } else {
      layout.img_suffix = ".png";
      layout.info = read_context_shift_info(root);
    }
  } else if (type == "coco_stuff164k") {
    const std::string split = split_name(options, "train2017", "val2017");
    layout.img_dir = root / "images" / split;
    layout.ann_dir = root / "annotations" / split;
    layout.seg_map_suffix = "_labelTrainIds.png";
    layout.info = coco_stuff164k_info();
  } else if (type == "cityscapes") {
    const std::string split = split_name(options, "train", "val");
    layout.img_dir = root / "leftImg8bit" / split;
    layout.ann_dir = root / "gtFine" / split;
    layout.img_suffix = "_leftImg8bit.png";
    layout.seg_map_suffix = "_gtFine_labelTrainIds.png";
    layout.info = cityscapes_info();
  } else if (type == "pascal_context59") {
    layout.img_dir = root / "JPEGImages";
    layout.ann_dir = root / "SegmentationClassContext";
    layout.split_file = root / "ImageSets" / "SegmentationContext" / (split_name(options, "train", "val") + ".txt");
    layout.reduce_zero_label = true;
    layout.info = pascal_context59_info();
  } else if (type == "custom") {
    TORCH_CHECK(!options.img_dir().empty() && !options.ann_dir().empty(),
                "cac_data::make_dataset: expected img_dir and ann_dir for a custom dataset but got img_dir='",
                options.img_dir(), "', ann_dir='", options.ann_dir(), "'");
    TORCH_CHECK(!options.classes().empty(),
                "cac_data::make_dataset: expected the class names (classes) of a custom dataset but got none");
    layout.img_dir = resolve(root, options.img_dir());
    layout.ann_dir = resolve(root, options.ann_dir());
    if (!options.split_file().empty()) {
      layout.split_file = resolve(root, options.split_file());
    }
    layout.info.name = "custom";
  } else {
    TORCH_CHECK(false,
                "cac_data::make_dataset: expected type 'ade20k', 'coco_stuff164k', 'cityscapes', 'pascal_context59', "
                "'context_shift' or 'custom' but got '",
                type, "'");
  }
  if (!options.classes().empty()) {
    layout.info.classes = options.classes();
    layout.info.palette = default_palette(layout.info.num_classes());
  }
  if (!options.palette().empty()) {
    TORCH_CHECK(options.palette().size() == layout.info.classes.size(), "cac_data::make_dataset: expected ",
                layout.info.classes.size(), " palette colours (one per class) but got ", options.palette().size());
    layout.info.palette = options.palette();
  }
  TORCH_CHECK(layout.info.num_classes() <= 255,
              "cac_data::make_dataset: expected at most 255 classes (uint8 labels) but got ",
              layout.info.num_classes());
  layout.img_suffix = options.img_suffix().value_or(layout.img_suffix);
  layout.seg_map_suffix = options.seg_map_suffix().value_or(layout.seg_map_suffix);
  layout.reduce_zero_label = options.reduce_zero_label().value_or(layout.reduce_zero_label);
  return layout;
}

}  // namespace

Dataset::~Dataset() = default;

const DatasetInfo& ade20k_info() {
  static const DatasetInfo info = make_info("ade20k", k_ade20k_classes, k_ade20k_palette);
  return info;
}

const DatasetInfo& coco_stuff164k_info() {
  static const DatasetInfo info = make_info("coco_stuff164k", k_coco_stuff164k_classes, k_coco_stuff164k_palette);
  return info;
}

const DatasetInfo& cityscapes_info() {
  static const DatasetInfo info = make_info("cityscapes", k_cityscapes_classes, k_cityscapes_palette);
  return info;
}

const DatasetInfo& pascal_context59_info() {
  static const DatasetInfo info = make_info("pascal_context59", k_pascal_context59_classes, k_pascal_context59_palette);
  return info;
}

std::vector<Rgb> default_palette(int64_t n) {
  TORCH_CHECK(n >= 0 && n < (int64_t(1) << 24) - 1, "cac_data::default_palette: expected 0 <= n < 2^24 - 1 but got ",
              n);
  // Pascal VOC's bit-interleaved colour map, starting at entry 1 (entry 0 is black).
  std::vector<Rgb> palette;
  for (int64_t i = 1; i <= n; ++i) {
    Rgb colour{0, 0, 0};
    int64_t c = i;
    for (int bit = 7; bit >= 0 && c > 0; --bit, c >>= 3) {
      for (int channel = 0; channel < 3; ++channel) {
        colour[channel] = static_cast<uint8_t>(colour[channel] | (((c >> channel) & 1) << bit));
      }
    }
    palette.push_back(colour);
  }
  return palette;
}

std::shared_ptr<Dataset> make_dataset(const DatasetOptions& options) {
  Layout layout = resolve_layout(options);
  std::vector<FilePair> files =
      layout.split_file.empty()
          ? scan_pairs(layout.img_dir, layout.ann_dir, layout.img_suffix, layout.seg_map_suffix)
          : list_pairs(layout.img_dir, layout.ann_dir, layout.split_file, layout.img_suffix, layout.seg_map_suffix);
  return std::make_shared<FileDataset>(std::move(layout.info), std::move(files), layout.reduce_zero_label);
}

}  // namespace cac_data
