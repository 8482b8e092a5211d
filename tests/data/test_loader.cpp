// cac_data loaders: the distributed sampler's sharding, determinism for any number of workers,
// exact resumption, error propagation and clean shutdown, the evaluation pass.

#include "data_test_support.hpp"

#include "data/loader.hpp"

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <map>

using namespace cac_data;
using cac_data_test::SyntheticDataset;
using Catch::Matchers::Contains;

namespace {

TrainPipelineOptions small_pipeline() { return TrainPipelineOptions().img_scale({256, 64}).crop_size({48, 40}); }

std::vector<Batch> take(TrainLoader& loader, int n) {
  std::vector<Batch> batches;
  for (int i = 0; i < n; ++i) {
    batches.push_back(loader.next());
  }
  return batches;
}

void check_equal(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].names == b[i].names);
    CHECK(a[i].indices == b[i].indices);
    CHECK(a[i].epoch == b[i].epoch);
    CHECK(torch::equal(a[i].images, b[i].images));
    CHECK(torch::equal(a[i].labels, b[i].labels));
  }
}

}  // namespace

TEST_CASE("shard_indices: every index once per epoch across ranks", "[loader]") {
  for (int64_t n : {12, 10, 7}) {
    for (int64_t world : {1, 2, 3}) {
      for (int64_t epoch : {0, 1}) {
        std::map<int64_t, int> seen;
        const int64_t per_rank = (n + world - 1) / world;
        for (int64_t rank = 0; rank < world; ++rank) {
          const auto shard = shard_indices(n, rank, world, true, 5, epoch);
          REQUIRE(static_cast<int64_t>(shard.size()) == per_rank);
          for (int64_t i : shard) {
            ++seen[i];
          }
        }
        REQUIRE(static_cast<int64_t>(seen.size()) == n);  // every index
        int64_t extra = 0;
        for (const auto& [index, count] : seen) {
          REQUIRE(index >= 0);
          REQUIRE(index < n);
          extra += count - 1;
        }
        CHECK(extra == per_rank * world - n);  // only the padding repeats
      }
    }
  }
  CHECK(shard_indices(12, 0, 1, true, 5, 0) != shard_indices(12, 0, 1, true, 5, 1));
  CHECK(shard_indices(12, 0, 1, true, 5, 0) == shard_indices(12, 0, 1, true, 5, 0));
  CHECK(shard_indices(6, 1, 2, false, 5, 3) == std::vector<int64_t>{1, 3, 5});
  CHECK_THROWS_WITH(shard_indices(6, 2, 2, false, 0, 0), Contains("expected n > 0 and 0 <= rank < world_size"));
}

TEST_CASE("TrainLoader: batches, epochs, independence of num_workers", "[loader]") {
  auto dataset = std::make_shared<SyntheticDataset>(7);
  const auto options = LoaderOptions().batch_size(3).seed(11).prefetch(3);
  TrainLoader reference(dataset, small_pipeline(), LoaderOptions(options).num_workers(0));
  CHECK(reference.batches_per_epoch() == 3);  // 3 + 3 + 1
  const auto expected = take(reference, 7);
  CHECK(expected[0].images.sizes() == torch::IntArrayRef({3, 3, 48, 40}));
  CHECK(expected[0].labels.sizes() == torch::IntArrayRef({3, 48, 40}));
  CHECK(expected[0].labels.dtype() == torch::kInt64);
  CHECK(expected[2].images.size(0) == 1);  // the last, incomplete batch of epoch 0
  CHECK(expected[3].epoch == 1);
  CHECK(expected[6].epoch == 2);
  std::vector<int64_t> epoch0;
  for (int i = 0; i < 3; ++i) {
    epoch0.insert(epoch0.end(), expected[i].indices.begin(), expected[i].indices.end());
  }
  std::sort(epoch0.begin(), epoch0.end());
  CHECK(epoch0 == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6});
  for (int64_t workers : {1, 3}) {
    TrainLoader loader(dataset, small_pipeline(), LoaderOptions(options).num_workers(workers));
    check_equal(take(loader, 7), expected);
  }
  SECTION("drop_last and sharding over ranks") {
    TrainLoader rank1(dataset, small_pipeline(), LoaderOptions(options).drop_last(true).world_size(2).rank(1));
    CHECK(rank1.samples_per_rank() == 4);
    CHECK(rank1.batches_per_epoch() == 1);
    const Batch batch = rank1.next();
    CHECK(batch.images.size(0) == 3);
    const auto shard = shard_indices(7, 1, 2, true, 11, 0);
    CHECK(batch.indices == std::vector<int64_t>(shard.begin(), shard.begin() + 3));
    CHECK_THROWS_WITH(TrainLoader(dataset, small_pipeline(), LoaderOptions(options).batch_size(8).drop_last(true)),
                      Contains("expected at least batch_size (8) samples per rank with drop_last but got 7"));
    CHECK_THROWS_WITH(TrainLoader(dataset, small_pipeline(), LoaderOptions(options).rank(2).world_size(2)),
                      Contains("expected 0 <= rank < world_size but got rank 2, world_size 2"));
  }
}

TEST_CASE("TrainLoader: state and restore resume bit-identically", "[loader]") {
  auto dataset = std::make_shared<SyntheticDataset>(5);
  const auto options = LoaderOptions().batch_size(2).seed(3).num_workers(2);
  TrainLoader uninterrupted(dataset, small_pipeline(), options);
  const auto expected = take(uninterrupted, 8);
  TrainLoader first(dataset, small_pipeline(), options);
  take(first, 4);
  const LoaderState state = first.state();
  CHECK(state.epoch == 1);  // 3 batches per epoch
  CHECK(state.position == 1);
  TrainLoader resumed(dataset, small_pipeline(), LoaderOptions(options).num_workers(1));
  resumed.restore(state);
  check_equal(take(resumed, 4), std::vector<Batch>(expected.begin() + 4, expected.end()));
  first.restore({0, 2});
  check_equal(take(first, 1), std::vector<Batch>(expected.begin() + 2, expected.begin() + 3));
  CHECK_THROWS_WITH(first.restore({0, 3}), Contains("expected epoch >= 0 and 0 <= position < 3"));
}

TEST_CASE("TrainLoader: worker errors reach next(), destruction never hangs", "[loader]") {
  auto dataset = std::make_shared<SyntheticDataset>(6, /*fail_index=*/4);
  const auto options = LoaderOptions().batch_size(1).shuffle(false).num_workers(2).prefetch(2);
  {
    TrainLoader loader(dataset, small_pipeline(), options);
    for (int i = 0; i < 4; ++i) {
      CHECK(loader.next().indices == std::vector<int64_t>{i});
    }
    CHECK_THROWS_WITH(loader.next(), Contains("synthetic load failure at index 4"));
    CHECK(loader.next().indices == std::vector<int64_t>{5});  // the failed batch counts as consumed
  }
  {
    TrainLoader sync(dataset, small_pipeline(), LoaderOptions(options).num_workers(0));
    sync.restore({0, 4});
    CHECK_THROWS_WITH(sync.next(), Contains("synthetic load failure at index 4"));
  }
  // Destroyed with full queues and workers mid-batch.
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 3; ++i) {
    TrainLoader loader(dataset, small_pipeline(), LoaderOptions(options).num_workers(3).prefetch(6));
    if (i > 0) {
      loader.next();
    }
  }
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
}

TEST_CASE("EvalLoader: each sample once across ranks, labels at full size", "[loader]") {
  auto dataset = std::make_shared<SyntheticDataset>(5);
  const auto pipeline = TestPipelineOptions().img_scale({256, 64});
  std::vector<int64_t> all;
  for (int64_t rank = 0; rank < 2; ++rank) {
    EvalLoader loader(dataset, pipeline, LoaderOptions().world_size(2).rank(rank).num_workers(2));
    CHECK(loader.size() == (rank == 0 ? 3 : 2));
    for (int pass = 0; pass < 2; ++pass) {
      int64_t count = 0;
      while (auto batch = loader.next()) {
        const int64_t index = batch->indices.at(0);
        const RawSample raw = dataset->load(static_cast<size_t>(index));
        CHECK(batch->images.size(0) == 1);
        CHECK(batch->images.size(2) == 64);  // short side of img_scale
        CHECK(batch->labels.sizes() == torch::IntArrayRef({1, raw.label.rows, raw.label.cols}));
        CHECK(batch->names == std::vector<std::string>{raw.name});
        if (pass == 0) {
          all.push_back(index);
        }
        ++count;
      }
      CHECK(count == loader.size());
      CHECK_FALSE(loader.next().has_value());
      loader.reset();
    }
  }
  std::sort(all.begin(), all.end());
  CHECK(all == std::vector<int64_t>{0, 1, 2, 3, 4});
}
