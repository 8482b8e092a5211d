// ConfusionMatrix and the metrics of mmseg 0.x's eval_metrics: hand-computed matrices (ignored
// pixels, NaN classes), merging, exact int64 counts beyond 2^31, the mmseg-style table and JSON.
#include "eval/metrics.hpp"

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>

using namespace cac_eval;
using Catch::Matchers::Contains;

namespace {

torch::Tensor longs(std::vector<int64_t> values, std::vector<int64_t> shape) {
  return torch::tensor(values, torch::kLong).view(shape);
}

std::vector<int64_t> to_vector(const torch::Tensor& t) {
  const torch::Tensor c = t.contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

}  // namespace

TEST_CASE("metrics: a hand-computed confusion matrix with ignored pixels", "[metrics]") {
  // 7 labelled pixels (one 255): (label, prediction) = (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (0,0).
  const torch::Tensor label = longs({0, 0, 1, 255, 1, 2, 2, 0}, {2, 4});
  const torch::Tensor pred = longs({0, 1, 1, 2, 1, 2, 0, 0}, {2, 4});
  ConfusionMatrix confusion(3);
  confusion.update(pred, label);
  CHECK(to_vector(confusion.matrix()) == std::vector<int64_t>{2, 1, 0, 0, 2, 0, 1, 0, 1});
  const Metrics m = confusion.compute();
  // intersect (2, 2, 1), label (3, 2, 2), prediction (3, 3, 1), union (4, 3, 2).
  CHECK(m.area_intersect == std::vector<int64_t>{2, 2, 1});
  CHECK(m.area_label == std::vector<int64_t>{3, 2, 2});
  CHECK(m.area_pred == std::vector<int64_t>{3, 3, 1});
  CHECK(m.area_union == std::vector<int64_t>{4, 3, 2});
  CHECK(m.iou[0] == Approx(0.5));
  CHECK(m.iou[1] == Approx(2.0 / 3.0));
  CHECK(m.iou[2] == Approx(0.5));
  CHECK(m.acc[0] == Approx(2.0 / 3.0));
  CHECK(m.acc[1] == Approx(1.0));
  CHECK(m.acc[2] == Approx(0.5));
  CHECK(m.aAcc == Approx(5.0 / 7.0));
  CHECK(m.mIoU == Approx((0.5 + 2.0 / 3.0 + 0.5) / 3.0));
  CHECK(m.mAcc == Approx((2.0 / 3.0 + 1.0 + 0.5) / 3.0));

  SECTION("another ignore index") {
    ConfusionMatrix other(3, /*ignore_index=*/2);
    other.update(pred, torch::where(label == 255, torch::full_like(label, 0), label));
    // label 2 skipped: (0,0) (0,1) (1,1) (0,2) (1,1) (0,0) → rows (2,1,1), (0,2,0), (0,0,0).
    CHECK(to_vector(other.matrix()) == std::vector<int64_t>{2, 1, 1, 0, 2, 0, 0, 0, 0});
    CHECK(other.ignore_index() == 2);
  }
  SECTION("reset") {
    confusion.reset();
    CHECK(confusion.matrix().sum().item<int64_t>() == 0);
  }
}

TEST_CASE("metrics: NaN for absent classes, excluded from the means", "[metrics]") {
  // Class 2 absent from label and prediction: IoU and Acc NaN. Class 3 predicted once, never
  // labelled: IoU 0 (counted in mIoU), Acc NaN (not in mAcc).
  const ConfusionMatrix confusion(longs({1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {4, 4}));
  CHECK(confusion.num_classes() == 4);
  const Metrics m = confusion.compute();
  CHECK(m.iou[0] == Approx(0.5));
  CHECK(m.iou[1] == Approx(1.0));
  CHECK(std::isnan(m.iou[2]));
  CHECK(m.iou[3] == 0.0);
  CHECK(m.acc[0] == Approx(0.5));
  CHECK(m.acc[1] == Approx(1.0));
  CHECK(std::isnan(m.acc[2]));
  CHECK(std::isnan(m.acc[3]));
  CHECK(m.aAcc == Approx(2.0 / 3.0));
  CHECK(m.mIoU == Approx(0.5));   // (0.5 + 1 + 0) / 3
  CHECK(m.mAcc == Approx(0.75));  // (0.5 + 1) / 2

  SECTION("an empty matrix: everything NaN") {
    const Metrics empty = ConfusionMatrix(3).compute();
    CHECK(std::isnan(empty.aAcc));
    CHECK(std::isnan(empty.mIoU));
    CHECK(std::isnan(empty.mAcc));
  }

  SECTION("the mmseg log table") {
    // Expected text laid out as PrettyTable centres cells (odd spare space right of odd-length
    // text, left of even-length text); values ×100 rounded to 2 decimals as Python prints floats.
    const std::string expected =
        "per class results:\n"
        "\n"
        "+----------+-------+-------+\n"
        "|  Class   |  IoU  |  Acc  |\n"
        "+----------+-------+-------+\n"
        "|   wall   |  50.0 |  50.0 |\n"
        "| building | 100.0 | 100.0 |\n"
        "|   sky    |  nan  |  nan  |\n"
        "|  floor   |  0.0  |  nan  |\n"
        "+----------+-------+-------+\n"
        "Summary:\n"
        "\n"
        "+-------+------+------+\n"
        "|  aAcc | mIoU | mAcc |\n"
        "+-------+------+------+\n"
        "| 66.67 | 50.0 | 75.0 |\n"
        "+-------+------+------+\n";
    CHECK(format_table(m, {"wall", "building", "sky", "floor"}) == expected);
    CHECK_THAT(format_table(m), Contains("|   3   |  0.0  |  nan  |"));
  }

  SECTION("JSON with null for NaN") {
    const nlohmann::json j = to_json(m, {"wall", "building", "sky", "floor"});
    CHECK(j["aAcc"].get<double>() == Approx(2.0 / 3.0));
    CHECK(j["mIoU"].get<double>() == Approx(0.5));
    CHECK(j["mAcc"].get<double>() == Approx(0.75));
    REQUIRE(j["classes"].size() == 4);
    CHECK(j["classes"][0]["name"] == "wall");
    CHECK(j["classes"][1]["IoU"].get<double>() == 1.0);
    CHECK(j["classes"][2]["IoU"].is_null());
    CHECK(j["classes"][2]["Acc"].is_null());
    CHECK(j["classes"][3]["IoU"].get<double>() == 0.0);
    CHECK(j["classes"][3]["Acc"].is_null());
    CHECK(j["classes"][3]["area_pred"].get<int64_t>() == 1);
    CHECK(j["classes"][0]["area_union"].get<int64_t>() == 2);
    CHECK_THAT(j.dump(), Contains("\"Acc\":null"));
    CHECK(to_json(m)["classes"][2]["name"] == "2");
  }
}

TEST_CASE("metrics: merge equals one update over all images; any shape", "[metrics]") {
  torch::manual_seed(0);
  torch::Tensor labels = torch::randint(0, 6, {4, 17, 23}, torch::kLong);
  labels.index_put_({torch::rand({4, 17, 23}) < 0.2}, 255);
  const torch::Tensor preds = torch::randint(0, 6, {4, 17, 23}, torch::kLong);
  ConfusionMatrix all(6), first(6), second(6);
  all.update(preds, labels);
  first.update(preds.slice(0, 0, 3), labels.slice(0, 0, 3));
  second.update(preds[3].t(), labels[3].t());  // non-contiguous
  first.merge(second);
  CHECK(torch::equal(all.matrix(), first.matrix()));
  // Against a naive loop.
  torch::Tensor naive = torch::zeros({6, 6}, torch::kLong);
  const auto l = labels.flatten(), p = preds.flatten();
  for (int64_t i = 0; i < l.numel(); ++i) {
    const int64_t li = l[i].item<int64_t>();
    if (li != 255) naive[li][p[i].item<int64_t>()].add_(1);
  }
  CHECK(torch::equal(all.matrix(), naive));
}

TEST_CASE("metrics: exact int64 counts beyond 2^31", "[metrics]") {
  const int64_t big = (int64_t(1) << 33) + 1;  // not representable in float32
  ConfusionMatrix confusion(longs({big, 1, 0, big - 1}, {2, 2}));
  confusion.merge(ConfusionMatrix(longs({big, 0, 2, 0}, {2, 2})));
  confusion.update(longs({0, 1, 1}, {3}), longs({0, 1, 255}, {3}));
  CHECK(to_vector(confusion.matrix()) == std::vector<int64_t>{2 * big + 1, 1, 2, big});
  const Metrics m = confusion.compute();
  CHECK(m.area_intersect == std::vector<int64_t>{2 * big + 1, big});
  CHECK(m.area_label == std::vector<int64_t>{2 * big + 2, big + 2});
  CHECK(m.area_pred == std::vector<int64_t>{2 * big + 3, big + 1});
  CHECK(m.area_union == std::vector<int64_t>{2 * big + 4, big + 3});
  CHECK(m.iou[0] == double(2 * big + 1) / double(2 * big + 4));
  CHECK(m.aAcc == double(3 * big + 1) / double(3 * big + 4));
}

TEST_CASE("metrics: errors name the argument, the expectation and the value", "[metrics]") {
  ConfusionMatrix confusion(3);
  const torch::Tensor ok = longs({0, 1}, {2});
  CHECK_THROWS_WITH(ConfusionMatrix(0), Contains("cac_eval::ConfusionMatrix: expected num_classes > 0 but got 0"));
  CHECK_THROWS_WITH(ConfusionMatrix(longs({1, 2}, {1, 2})),
                    Contains("expected a matrix of shape [n, n] with n > 0 but got [1, 2]"));
  CHECK_THROWS_WITH(ConfusionMatrix(longs({1, -2, 0, 0}, {2, 2})), Contains("non-negative counts"));
  CHECK_THROWS_WITH(confusion.update(ok, longs({0, 1, 2}, {3})),
                    Contains("cac_eval::ConfusionMatrix::update: expected prediction and label of equal shape but "
                             "got [2] and [3]"));
  CHECK_THROWS_WITH(confusion.update(ok.to(torch::kInt), ok), Contains("expected an int64 prediction but got Int"));
  CHECK_THROWS_WITH(confusion.update(ok, longs({0, 7}, {2})),
                    Contains("expected labels in [0, 3) or 255 (ignored) but got values in [0, 7]"));
  CHECK_THROWS_WITH(confusion.update(longs({-1, 0}, {2}), ok),
                    Contains("expected predictions in [0, 3) but got values in [-1, 0]"));
  CHECK_THROWS_AS(confusion.merge(ConfusionMatrix(4)), c10::Error);
  CHECK_THROWS_WITH(format_table(confusion.compute(), {"a"}), Contains("expected 3 class names"));
  CHECK(confusion.matrix().sum().item<int64_t>() == 0);  // failed updates add nothing
}
