#include "loader.hpp"

#include "random.hpp"

#include <torch/torch.h>

#include <condition_variable>
#include <exception>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <thread>

namespace cac_data {

namespace detail {

/// Runs `task(k)` for k = first, first + 1, ... (up to `end`, or forever if `end` < 0) on worker
/// threads, at most `window` tasks ahead of the consumer, and hands the results out in order.
class Prefetcher {
 public:
  using Task = std::function<Batch(int64_t)>;

  Prefetcher(Task task, int64_t first, int64_t end, int64_t num_workers, int64_t window)
      : task_(std::move(task)), next_task_(first), next_out_(first), end_(end), window_(std::max<int64_t>(window, 1)) {
    for (int64_t i = 0; i < num_workers; ++i) {
      threads_.emplace_back([this] { work(); });
    }
  }

  ~Prefetcher() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    work_ready_.notify_all();
    for (auto& thread : threads_) {
      thread.join();
    }
  }

  /// Index of the next result.
  int64_t position() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return next_out_;
  }

  /// The next result in order, `std::nullopt` at the end; re-throws a task's exception.
  std::optional<Batch> next() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (end_ >= 0 && next_out_ >= end_) {
      return std::nullopt;
    }
    if (threads_.empty()) {
      const int64_t k = next_out_++;
      lock.unlock();
      return task_(k);
    }
    result_ready_.wait(lock, [&] { return done_.count(next_out_) > 0; });
    Result result = std::move(done_.at(next_out_));
    done_.erase(next_out_);
    ++next_out_;
    lock.unlock();
    work_ready_.notify_all();
    if (result.error) {
      std::rethrow_exception(result.error);
    }
    return std::move(result.batch);
  }

 private:
  struct Result {
    Batch batch;
    std::exception_ptr error;
  };

  void work() {
    while (true) {
      int64_t k = 0;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        work_ready_.wait(
            lock, [&] { return stop_ || (next_task_ < next_out_ + window_ && (end_ < 0 || next_task_ < end_)); });
        if (stop_) {
          return;
        }
        k = next_task_++;
      }
      Result result;
      try {
        result.batch = task_(k);
      } catch (...) {
        result.error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        done_.emplace(k, std::move(result));
      }
      result_ready_.notify_all();
    }
  }

  Task task_;
  mutable std::mutex mutex_;
  std::condition_variable work_ready_, result_ready_;
  int64_t next_task_, next_out_, end_, window_;
  bool stop_ = false;
  std::map<int64_t, Result> done_;
  std::vector<std::thread> threads_;
};

}  // namespace detail

namespace {

void check_options(const LoaderOptions& options, const char* where) {
  TORCH_CHECK(options.world_size() >= 1 && options.rank() >= 0 && options.rank() < options.world_size(),
              "cac_data::", where, ": expected 0 <= rank < world_size but got rank ", options.rank(), ", world_size ",
              options.world_size());
  TORCH_CHECK(options.num_workers() >= 0 && options.prefetch() >= 1, "cac_data::", where,
              ": expected num_workers >= 0 and prefetch >= 1 but got num_workers ", options.num_workers(),
              ", prefetch ", options.prefetch());
}

/// Stacks samples into a batch, pinned when asked and possible.
Batch collate(std::vector<Sample>& samples, std::vector<int64_t> indices, int64_t epoch, bool pin_memory) {
  for (const auto& sample : samples) {
    TORCH_CHECK(sample.image.sizes() == samples.front().image.sizes(),
                "cac_data::collate: expected images of one size in a batch but got ", samples.front().image.sizes(),
                " (", samples.front().name, ") and ", sample.image.sizes(), " (", sample.name, ")");
  }
  std::vector<torch::Tensor> images, labels;
  Batch batch;
  for (auto& sample : samples) {
    images.push_back(std::move(sample.image));
    labels.push_back(std::move(sample.label));
    batch.names.push_back(std::move(sample.name));
  }
  batch.images = torch::stack(images);
  batch.labels = labels.front().defined() ? torch::stack(labels) : torch::Tensor();
  if (pin_memory && at::globalContext().hasCUDA()) {
    batch.images = batch.images.pin_memory();
    if (batch.labels.defined()) {
      batch.labels = batch.labels.pin_memory();
    }
  }
  batch.indices = std::move(indices);
  batch.epoch = epoch;
  return batch;
}

/// Moves a batch to the loader's device.
Batch to_device(Batch batch, const LoaderOptions& options) {
  if (options.device() != torch::Device(torch::kCPU)) {
    const bool non_blocking = options.pin_memory() && batch.images.is_pinned();
    batch.images = batch.images.to(options.device(), non_blocking);
    if (batch.labels.defined()) {
      batch.labels = batch.labels.to(options.device(), non_blocking);
    }
  }
  return batch;
}

}  // namespace

std::vector<int64_t> shard_indices(int64_t n, int64_t rank, int64_t world_size, bool shuffle, uint64_t seed,
                                   int64_t epoch) {
  TORCH_CHECK(n > 0 && world_size >= 1 && rank >= 0 && rank < world_size,
              "cac_data::shard_indices: expected n > 0 and 0 <= rank < world_size but got n ", n, ", rank ", rank,
              ", world_size ", world_size);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  if (shuffle) {  // Fisher–Yates with the portable uniform_int
    std::mt19937_64 rng(derive_seed(~seed, static_cast<uint64_t>(epoch)));
    for (int64_t i = n - 1; i > 0; --i) {
      std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(uniform_int(rng, 0, i))]);
    }
  }
  const int64_t per_rank = (n + world_size - 1) / world_size;
  std::vector<int64_t> shard;
  for (int64_t i = rank; i < per_rank * world_size; i += world_size) {
    shard.push_back(order[static_cast<size_t>(i % n)]);
  }
  return shard;
}

uint64_t sample_seed(uint64_t seed, int64_t epoch, int64_t index) {
  return derive_seed(seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(index));
}

TrainLoader::TrainLoader(std::shared_ptr<const Dataset> dataset, TrainPipelineOptions pipeline, LoaderOptions options)
    : dataset_(std::move(dataset)), pipeline_(std::move(pipeline)), options_(std::move(options)) {
  TORCH_CHECK(dataset_ && dataset_->size() > 0, "cac_data::TrainLoader: expected a non-empty dataset but got ",
              dataset_ ? "an empty one" : "none");
  check_options(options_, "TrainLoader");
  TORCH_CHECK(options_.batch_size() >= 1, "cac_data::TrainLoader: expected batch_size >= 1 but got ",
              options_.batch_size());
  const int64_t n = static_cast<int64_t>(dataset_->size());
  samples_per_rank_ = (n + options_.world_size() - 1) / options_.world_size();
  batches_per_epoch_ = options_.drop_last() ? samples_per_rank_ / options_.batch_size()
                                            : (samples_per_rank_ + options_.batch_size() - 1) / options_.batch_size();
  TORCH_CHECK(batches_per_epoch_ > 0, "cac_data::TrainLoader: expected at least batch_size (", options_.batch_size(),
              ") samples per rank with drop_last but got ", samples_per_rank_);
  start(0);
}

TrainLoader::~TrainLoader() = default;

void TrainLoader::start(int64_t global_batch) {
  prefetcher_.reset();  // joins the old workers first
  prefetcher_ = std::make_unique<detail::Prefetcher>([this](int64_t k) { return make_batch(k); }, global_batch, -1,
                                                     options_.num_workers(), options_.prefetch());
}

std::shared_ptr<const std::vector<int64_t>> TrainLoader::epoch_indices(int64_t epoch) const {
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cached_epoch_ != epoch) {
    cached_indices_ = std::make_shared<const std::vector<int64_t>>(
        shard_indices(static_cast<int64_t>(dataset_->size()), options_.rank(), options_.world_size(),
                      options_.shuffle(), options_.seed(), epoch));
    cached_epoch_ = epoch;
  }
  return cached_indices_;
}

Batch TrainLoader::make_batch(int64_t global_batch) const {
  const int64_t epoch = global_batch / batches_per_epoch_;
  const int64_t first = (global_batch % batches_per_epoch_) * options_.batch_size();
  const int64_t last = std::min(first + options_.batch_size(), samples_per_rank_);
  const auto shard = epoch_indices(epoch);
  std::vector<Sample> samples;
  std::vector<int64_t> indices;
  for (int64_t i = first; i < last; ++i) {
    const int64_t index = (*shard)[static_cast<size_t>(i)];
    std::mt19937_64 rng(sample_seed(options_.seed(), epoch, index));
    samples.push_back(train_transform(dataset_->load(static_cast<size_t>(index)), pipeline_, rng));
    indices.push_back(index);
  }
  return collate(samples, std::move(indices), epoch, options_.pin_memory());
}

Batch TrainLoader::next() { return to_device(*prefetcher_->next(), options_); }

LoaderState TrainLoader::state() const {
  const int64_t position = prefetcher_->position();
  return {position / batches_per_epoch_, position % batches_per_epoch_};
}

void TrainLoader::restore(const LoaderState& state) {
  TORCH_CHECK(state.epoch >= 0 && state.position >= 0 && state.position < batches_per_epoch_,
              "cac_data::TrainLoader::restore: expected epoch >= 0 and 0 <= position < ", batches_per_epoch_,
              " but got epoch ", state.epoch, ", position ", state.position);
  start(state.epoch * batches_per_epoch_ + state.position);
}

EvalLoader::EvalLoader(std::shared_ptr<const Dataset> dataset, TestPipelineOptions pipeline, LoaderOptions options)
    : dataset_(std::move(dataset)), pipeline_(std::move(pipeline)), options_(std::move(options)) {
  TORCH_CHECK(dataset_, "cac_data::EvalLoader: expected a dataset but got none");
  check_options(options_, "EvalLoader");
  for (int64_t i = options_.rank(); i < static_cast<int64_t>(dataset_->size()); i += options_.world_size()) {
    indices_.push_back(i);
  }
  reset();
}

EvalLoader::~EvalLoader() = default;

void EvalLoader::reset() {
  prefetcher_.reset();
  prefetcher_ = std::make_unique<detail::Prefetcher>(
      [this](int64_t k) {
        const int64_t index = indices_[static_cast<size_t>(k)];
        std::vector<Sample> samples{test_transform(dataset_->load(static_cast<size_t>(index)), pipeline_)};
        return collate(samples, {index}, 0, options_.pin_memory());
      },
      0, size(), options_.num_workers(), options_.prefetch());
}

std::optional<Batch> EvalLoader::next() {
  std::optional<Batch> batch = prefetcher_->next();
  if (batch) {
    batch = to_device(std::move(*batch), options_);
  }
  return batch;
}

}  // namespace cac_data
