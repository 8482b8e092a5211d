#include "distributed.hpp"

// Debian's (and PyTorch's) LibTorch is built with Gloo; its c10d header hides the class unless
// this is defined. The gloo headers come from the libgloo-dev package.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
// A CUDA LibTorch defines USE_C10D_NCCL for its consumers; cac compiles the NCCL backend only when
// CMake also found nccl.h (CAC_WITH_NCCL), which pip wheels ship in the nvidia-nccl package.
#if defined(USE_C10D_NCCL) && defined(CAC_WITH_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <torch/autograd.h>
#include <torch/version.h>
#include <torch/torch.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <thread>
#include <utility>

extern char** environ;

namespace cac_engine {

namespace {

std::optional<std::string> env_value(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

int64_t parse_int(const char* name, const std::string& value) {
  size_t used = 0;
  int64_t result = 0;
  try {
    result = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  TORCH_CHECK(used == value.size() && !value.empty(), "cac_engine::DistributedEnv: expected an integer in ", name,
              " but got '", value, "'");
  return result;
}

// The first of the variables that is set, parsed.
std::optional<int64_t> int_from_env(std::initializer_list<const char*> names) {
  for (const char* name : names)
    if (auto value = env_value(name)) return parse_int(name, *value);
  return std::nullopt;
}

bool is_loopback(const std::string& address) {
  return address == "localhost" || address.rfind("127.", 0) == 0 || address == "::1";
}

std::string error_text(const std::exception& error) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&error)) return c10_error->what_without_backtrace();
  return error.what();
}

}  // namespace

// ----------------------------------------------------------------------------------------------
// DistributedEnv

DistributedEnv DistributedEnv::from_env() {
  DistributedEnv env;
  auto rank = int_from_env({"RANK", "SLURM_PROCID"});
  auto world_size = int_from_env({"WORLD_SIZE", "SLURM_NTASKS"});
  auto local_rank = int_from_env({"LOCAL_RANK", "SLURM_LOCALID"});
  env.launched = rank.has_value() || world_size.has_value();
  env.rank = rank.value_or(0);
  env.world_size = world_size.value_or(1);
  env.local_rank = local_rank.value_or(0);
  if (auto address = env_value("MASTER_ADDR")) env.master_addr = *address;
  if (auto port = env_value("MASTER_PORT")) env.master_port = parse_int("MASTER_PORT", *port);
  TORCH_CHECK(env.world_size >= 1, "cac_engine::DistributedEnv: expected WORLD_SIZE >= 1 but got ", env.world_size);
  TORCH_CHECK(env.rank >= 0 && env.rank < env.world_size, "cac_engine::DistributedEnv: expected RANK in [0, ",
              env.world_size, ") but got ", env.rank);
  TORCH_CHECK(env.local_rank >= 0, "cac_engine::DistributedEnv: expected LOCAL_RANK >= 0 but got ", env.local_rank);
  TORCH_CHECK(env.master_port > 0 && env.master_port < 65536,
              "cac_engine::DistributedEnv: expected MASTER_PORT in [1, 65535] but got ", env.master_port);
  return env;
}

// ----------------------------------------------------------------------------------------------
// ProcessGroup

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
#if TORCH_VERSION_MAJOR >= 2
  // From LibTorch 2.0 on, Gloo and NCCL are c10d::Backend implementations, not ProcessGroups.
  c10::intrusive_ptr<c10d::Backend> group;
#else
  c10::intrusive_ptr<c10d::ProcessGroup> group;
#endif
};

ProcessGroup::ProcessGroup() = default;

ProcessGroup::ProcessGroup(const DistributedEnv& env, torch::Device device, std::chrono::milliseconds timeout) {
  init(env, device, timeout);
}

ProcessGroup::~ProcessGroup() = default;

void ProcessGroup::set_bucket_bytes(int64_t bytes) {
  TORCH_CHECK(bytes > 0, "cac_engine::ProcessGroup::set_bucket_bytes: expected a positive size but got ", bytes);
  bucket_bytes_ = bytes;
}

void ProcessGroup::init(const DistributedEnv& env, torch::Device device, std::chrono::milliseconds timeout) {
  TORCH_CHECK(env.world_size >= 1, "cac_engine::ProcessGroup::init: expected world_size >= 1 but got ",
              env.world_size);
  TORCH_CHECK(env.rank >= 0 && env.rank < env.world_size, "cac_engine::ProcessGroup::init: expected rank in [0, ",
              env.world_size, ") but got ", env.rank);
  TORCH_CHECK(timeout.count() > 0, "cac_engine::ProcessGroup::init: expected a positive timeout but got ",
              timeout.count(), " ms");
  TORCH_CHECK(device.is_cpu() || device.is_cuda(),
              "cac_engine::ProcessGroup::init: expected a CPU or CUDA device but got ", device);
  impl_.reset();
  rank_ = env.rank;
  size_ = env.world_size;
  device_ = device;
  timeout_ = timeout;
  backend_ = "none";
  if (size_ == 1) return;

  TORCH_CHECK(env.master_port > 0 && env.master_port < 65536,
              "cac_engine::ProcessGroup::init: expected a master port in [1, 65535] but got ", env.master_port);
  auto impl = std::make_unique<Impl>();
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<std::uint16_t>(env.master_port);
    store_options.isServer = rank_ == 0;
    store_options.numWorkers = static_cast<std::size_t>(size_);
    store_options.waitWorkers = true;
    store_options.timeout = timeout;
    impl->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, store_options);
    if (device.is_cuda()) {
#if defined(USE_C10D_NCCL) && defined(CAC_WITH_NCCL)
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      impl->group = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl->store, static_cast<int>(rank_),
                                                                 static_cast<int>(size_), options);
      backend_ = "nccl";
#else
      TORCH_CHECK(false, "cac_engine::ProcessGroup::init: expected cac built with NCCL for device ", device,
                         " but got a build without it (a CPU LibTorch, or nccl.h not found at configure time); "
                         "train on the CPU (Gloo) or rebuild against a CUDA LibTorch with nccl.h on the include "
                         "path (CMake prints 'cac: NCCL ...')");
#endif
    } else {
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      if (auto interface = env_value("GLOO_SOCKET_IFNAME")) {
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(*interface));
      } else if (is_loopback(env.master_addr)) {
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      impl->group = c10::make_intrusive<c10d::ProcessGroupGloo>(impl->store, static_cast<int>(rank_),
                                                                 static_cast<int>(size_), options);
      backend_ = "gloo";
    }
  } catch (const std::exception& error) {
    size_ = 1;
    rank_ = 0;
    backend_ = "none";
    TORCH_CHECK(false, "cac_engine::ProcessGroup::init: rank ", env.rank, " of ", env.world_size,
                " could not join the group at ", env.master_addr, ":", env.master_port, " within ",
                timeout.count() / 1000.0, " s (is every rank started, and MASTER_ADDR/MASTER_PORT the same "
                "everywhere?): ", error_text(error));
  }
  impl_ = std::move(impl);
}

void ProcessGroup::check_ranks(const char* what) const {
  TORCH_CHECK(size_ == 1 || impl_, "cac_engine::ProcessGroup::", what, ": expected an initialised group but got none");
}

namespace {

// Runs a collective, turning a failure into an error that says who failed and why.
template <class Function>
void run(const char* what, int64_t rank, int64_t size, std::chrono::milliseconds timeout, Function&& function) {
  try {
    function();
  } catch (const std::exception& error) {
    TORCH_CHECK(false, "cac_engine::ProcessGroup::", what, ": rank ", rank, " of ", size,
                " failed: a peer died or did not answer within the timeout of ", timeout.count() / 1000.0, " s: ",
                error_text(error));
  }
}

}  // namespace

void ProcessGroup::bucketed(std::vector<torch::Tensor>& tensors, const char* what, int64_t root) {
  check_ranks(what);
  for (size_t i = 0; i < tensors.size(); ++i)
    TORCH_CHECK(tensors[i].defined(), "cac_engine::ProcessGroup::", what, ": expected defined tensors but got an "
                "undefined one at index ", i);
  if (size_ == 1 || tensors.empty()) return;
  const bool is_broadcast = root >= 0;
  torch::NoGradGuard no_grad;

  auto collective = [&](std::vector<torch::Tensor>& flat) {
    run(what, rank_, size_, timeout_, [&] {
      c10::intrusive_ptr<c10d::Work> work;
      if (is_broadcast) {
        c10d::BroadcastOptions options;
        options.rootRank = root;
        work = impl_->group->broadcast(flat, options);
      } else {
        c10d::AllreduceOptions options;
        options.reduceOp = c10d::ReduceOp::SUM;
        work = impl_->group->allreduce(flat, options);
      }
      work->wait();
    });
  };
  auto flush = [&](std::vector<size_t>& bucket) {
    if (bucket.empty()) return;
    torch::Tensor& first = tensors[bucket.front()];
    if (bucket.size() == 1 && first.is_contiguous()) {
      std::vector<torch::Tensor> flat{first};
      collective(flat);
    } else {
      std::vector<torch::Tensor> pieces;
      pieces.reserve(bucket.size());
      for (size_t index : bucket) pieces.push_back(tensors[index].reshape({-1}));
      std::vector<torch::Tensor> flat{torch::cat(pieces)};
      collective(flat);
      int64_t offset = 0;
      for (size_t index : bucket) {
        torch::Tensor& tensor = tensors[index];
        const int64_t n = tensor.numel();
        tensor.copy_(flat[0].narrow(0, offset, n).view(tensor.sizes()));
        offset += n;
      }
    }
    bucket.clear();
  };

  // One open bucket per (dtype, device), in the order the tensors come: every rank issues the same
  // sequence of collectives for the same list of tensors.
  std::map<std::pair<int, std::string>, std::pair<std::vector<size_t>, int64_t>> open;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const torch::Tensor& tensor = tensors[i];
    TORCH_CHECK(tensor.device().type() == device_.type(), "cac_engine::ProcessGroup::", what,
                ": expected tensors on the group's device ", device_, " but got one on ", tensor.device());
    auto key = std::make_pair(static_cast<int>(tensor.scalar_type()), tensor.device().str());
    auto& [bucket, bytes] = open[key];
    const int64_t tensor_bytes = tensor.numel() * static_cast<int64_t>(tensor.element_size());
    if (!bucket.empty() && bytes + tensor_bytes > bucket_bytes_) {
      flush(bucket);
      bytes = 0;
    }
    bucket.push_back(i);
    bytes += tensor_bytes;
  }
  for (auto& [key, bucket] : open) flush(bucket.first);
}

void ProcessGroup::broadcast(std::vector<torch::Tensor>& tensors, int64_t root) {
  TORCH_CHECK(root >= 0 && root < size_, "cac_engine::ProcessGroup::broadcast: expected a root rank in [0, ", size_,
              ") but got ", root);
  bucketed(tensors, "broadcast", root);
}

void ProcessGroup::all_reduce_sum(std::vector<torch::Tensor>& tensors) { bucketed(tensors, "all_reduce_sum", -1); }

void ProcessGroup::barrier() {
  check_ranks("barrier");
  if (size_ == 1) return;
  run("barrier", rank_, size_, timeout_, [&] { impl_->group->barrier()->wait(); });
}

// ----------------------------------------------------------------------------------------------
// Parameters, gradients, scalars, confusion matrices

void broadcast_parameters(torch::nn::Module& module, ProcessGroup& group) {
  if (group.size() == 1) return;
  std::vector<torch::Tensor> tensors;
  for (const auto& parameter : module.parameters())
    if (parameter.defined()) tensors.push_back(parameter);
  for (const auto& buffer : module.buffers())
    if (buffer.defined()) tensors.push_back(buffer);
  group.broadcast(tensors, 0);
}

void average_gradients(torch::nn::Module& module, ProcessGroup& group) {
  if (group.size() == 1) return;
  std::vector<torch::Tensor> parameters;
  for (const auto& parameter : module.parameters())
    if (parameter.defined() && parameter.requires_grad()) parameters.push_back(parameter);
  if (parameters.empty()) return;

  std::vector<torch::Tensor> grads;
  grads.reserve(parameters.size() + 1);
  auto has_grad = torch::zeros({static_cast<int64_t>(parameters.size())}, torch::kFloat);
  auto* flag = has_grad.data_ptr<float>();
  for (size_t i = 0; i < parameters.size(); ++i) {
    torch::Tensor grad = parameters[i].grad();
    if (grad.defined()) {
      flag[i] = 1;
      grads.push_back(grad);
    } else {
      grads.push_back(torch::zeros_like(parameters[i], torch::MemoryFormat::Contiguous));
    }
  }
  grads.push_back(has_grad.to(group.device()));
  group.all_reduce_sum(grads);

  torch::NoGradGuard no_grad;
  const auto ranks_with_grad = grads.back().cpu();
  const auto* count = ranks_with_grad.data_ptr<float>();
  const double scale = 1.0 / static_cast<double>(group.size());
  for (size_t i = 0; i < parameters.size(); ++i) {
    if (flag[i] != 0) {
      grads[i].mul_(scale);
    } else if (count[i] > 0) {
      parameters[i].mutable_grad() = grads[i].mul_(scale);
    }
  }
}

double average_scalar(double value, ProcessGroup& group) {
  if (group.size() == 1) return value;
  std::vector<torch::Tensor> tensors{torch::full({1}, value, torch::dtype(torch::kDouble).device(group.device()))};
  group.all_reduce_sum(tensors);
  return tensors[0].item<double>() / static_cast<double>(group.size());
}

cac_eval::ConfusionMatrix all_reduce(const cac_eval::ConfusionMatrix& confusion, ProcessGroup& group) {
  std::vector<torch::Tensor> tensors{confusion.matrix().to(group.device()).contiguous()};
  group.all_reduce_sum(tensors);
  return cac_eval::ConfusionMatrix(tensors[0].cpu(), confusion.ignore_index());
}

// ----------------------------------------------------------------------------------------------
// Synchronised batch norm

namespace {

// y = (x - mean) * invstd * weight + bias with the group's mean and variance; the backward pass
// all-reduces sum(dy) and sum(dy * x̂) to form the input gradient (PyTorch's SyncBatchNorm); the
// weight/bias gradients stay local. Both passes use ATen's fused batch-norm kernels in evaluation
// mode (the group's statistics as constants): one kernel for the output, one for dy·w·invstd and
// the two per-channel sums, then one fused multiply-add and one add for the terms through the
// statistics: dx = w·invstd·(dy − mean(dy) − x̂·mean(dy·x̂)) = dy·w·invstd + x·b + c.
struct SyncBatchNormFunction : public torch::autograd::Function<SyncBatchNormFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               const torch::Tensor& weight, const torch::Tensor& bias, const torch::Tensor& mean,
                               const torch::Tensor& var, double eps, double count, int64_t group_address) {
    const auto type = input.scalar_type();
    // An affine-free layer gets unit weights: the backward kernel then returns sum(dy * x̂).
    const torch::Tensor scale = weight.defined() ? weight.to(type) : torch::ones_like(mean);
    const torch::Tensor output = std::get<0>(
        at::native_batch_norm(input, scale, bias.defined() ? bias.to(type) : torch::Tensor(), mean, var,
                              /*training=*/false, 0.0, eps));
    ctx->save_for_backward({input, scale, mean, var});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["count"] = count;
    ctx->saved_data["group"] = group_address;
    ctx->saved_data["has_weight"] = weight.defined();
    ctx->saved_data["has_bias"] = bias.defined();
    return output;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& input = saved[0];
    const torch::Tensor& scale = saved[1];
    const torch::Tensor& mean = saved[2];
    const torch::Tensor& var = saved[3];
    const double eps = ctx->saved_data["eps"].toDouble();
    const double count = ctx->saved_data["count"].toDouble();
    auto& group = *reinterpret_cast<ProcessGroup*>(static_cast<intptr_t>(ctx->saved_data["group"].toInt()));

    const int64_t channels = input.size(1);
    const std::vector<int64_t> shape{1, channels, 1, 1};
    // grad_input = dy·w·invstd, sum_dy_xhat = Σ dy·x̂, sum_dy = Σ dy (this rank's).
    auto [grad_input, sum_dy_xhat, sum_dy] = at::native_batch_norm_backward(
        grad_outputs[0].contiguous(), input, scale, mean, var, torch::Tensor(), torch::Tensor(), /*train=*/false, eps,
        {true, true, true});
    std::vector<torch::Tensor> sums{torch::cat({sum_dy, sum_dy_xhat}).to(torch::kDouble)};
    group.all_reduce_sum(sums);
    const torch::Tensor mean_dy = sums[0].narrow(0, 0, channels) / count;
    const torch::Tensor mean_dy_xhat = sums[0].narrow(0, channels, channels) / count;
    const torch::Tensor invstd = (var.to(torch::kDouble) + eps).rsqrt();
    const torch::Tensor w_invstd = scale.to(torch::kDouble) * invstd;
    const torch::Tensor b = -w_invstd * invstd * mean_dy_xhat;
    const torch::Tensor c = -w_invstd * mean_dy - b * mean.to(torch::kDouble);
    grad_input.addcmul_(input, b.to(input.scalar_type()).view(shape)).add_(c.to(input.scalar_type()).view(shape));
    return {grad_input,
            ctx->saved_data["has_weight"].toBool() ? sum_dy_xhat : torch::Tensor(),
            ctx->saved_data["has_bias"].toBool() ? sum_dy : torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor sync_batch_norm(const torch::Tensor& input, const torch::nn::BatchNorm2dOptions& options, bool training,
                              const torch::Tensor& weight, const torch::Tensor& bias, torch::Tensor running_mean,
                              torch::Tensor running_var, torch::Tensor num_batches_tracked, ProcessGroup& group) {
  TORCH_CHECK(input.dim() == 4, "cac_engine::sync_batch_norm: expected a 4-D input [N, C, H, W] but got ",
              input.sizes());
  const int64_t channels = input.size(1);
  TORCH_CHECK(channels == options.num_features(), "cac_engine::sync_batch_norm: expected ", options.num_features(),
              " channels but got ", channels);
  const bool track = options.track_running_stats() && running_mean.defined() && running_var.defined();
  const bool batch_statistics = training || !track;
  const double factor = cac_models::running_average_factor(options, training && track, num_batches_tracked);
  if (!batch_statistics || group.size() == 1)
    return torch::batch_norm(input, weight, bias, running_mean, running_var, batch_statistics, factor, options.eps(),
                             at::globalContext().userEnabledCuDNN());

  torch::Tensor mean;
  torch::Tensor var;
  double count = 0;
  {
    torch::NoGradGuard no_grad;
    const int64_t local_count = channels > 0 ? input.numel() / channels : 0;
    auto stats = torch::zeros({2 * channels + 1}, torch::dtype(torch::kDouble).device(input.device()));
    if (local_count > 0) {
      auto [var, local_mean] = torch::var_mean(input, {0, 2, 3}, /*unbiased=*/false);
      auto mean64 = local_mean.to(torch::kDouble);
      auto var64 = var.to(torch::kDouble);
      stats.narrow(0, 0, channels).copy_(mean64 * static_cast<double>(local_count));
      stats.narrow(0, channels, channels).copy_((var64 + mean64 * mean64) * static_cast<double>(local_count));
      stats[2 * channels].fill_(static_cast<double>(local_count));
    }
    std::vector<torch::Tensor> sums{stats};
    group.all_reduce_sum(sums);
    count = stats[2 * channels].item<double>();
    TORCH_CHECK(count > 1, "cac_engine::sync_batch_norm: expected more than 1 value per channel over the group in "
                "training but got ", count);
    auto mean64 = stats.narrow(0, 0, channels) / count;
    auto var64 = (stats.narrow(0, channels, channels) / count - mean64 * mean64).clamp_min(0);
    mean = mean64.to(input.scalar_type());
    var = var64.to(input.scalar_type());
    if (training && track) {
      running_mean.mul_(1 - factor).add_(mean64.to(running_mean.scalar_type()), factor);
      running_var.mul_(1 - factor).add_((var64 * (count / (count - 1))).to(running_var.scalar_type()), factor);
    }
  }
  return SyncBatchNormFunction::apply(input.contiguous(), weight, bias, mean, var, options.eps(), count,
                                      static_cast<int64_t>(reinterpret_cast<intptr_t>(&group)));
}

torch::Tensor sync_batch_norm(const torch::Tensor& input, torch::nn::BatchNorm2dImpl& norm, ProcessGroup& group) {
  return sync_batch_norm(input, norm.options, norm.is_training(), norm.weight, norm.bias, norm.running_mean,
                         norm.running_var, norm.num_batches_tracked, group);
}

std::shared_ptr<ProcessGroup> join_environment_group(torch::Device& device, std::chrono::milliseconds timeout) {
  const DistributedEnv env = DistributedEnv::from_env();
  auto group = std::make_shared<ProcessGroup>();
  if (!env.distributed()) return group;
  if (device.is_cuda() && !device.has_index()) device = torch::Device(torch::kCUDA, env.local_rank);
  group->init(env, device, timeout);
  return group;
}

int64_t synchronize_batch_norms(torch::nn::Module& module, std::shared_ptr<ProcessGroup> group) {
  if (!group || group->size() == 1) {
    cac_models::set_sync_norm(module, nullptr);
    return 0;
  }
  return cac_models::set_sync_norm(
      module, std::make_shared<const cac_models::SyncNormFunction>(
                  [group](const torch::Tensor& input, cac_models::Norm2dImpl& norm) {
                    return sync_batch_norm(input, norm.options, norm.is_training(), norm.weight, norm.bias,
                                           norm.running_mean, norm.running_var, norm.num_batches_tracked, *group);
                  }));
}

// ----------------------------------------------------------------------------------------------
// Launcher

int64_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  TORCH_CHECK(fd >= 0, "cac_engine::free_port: expected a socket but got errno ", errno, " (", std::strerror(errno),
              ")");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  const int error = errno;
  ::close(fd);
  TORCH_CHECK(ok, "cac_engine::free_port: expected to bind 127.0.0.1:0 but got errno ", error, " (",
              std::strerror(error), ")");
  return ntohs(address.sin_port);
}

LaunchResult launch_workers(int64_t nproc, const std::vector<std::string>& args, const LaunchOptions& options) {
  TORCH_CHECK(nproc > 0, "cac_engine::launch_workers: expected nproc > 0 but got ", nproc);
  TORCH_CHECK(!args.empty(), "cac_engine::launch_workers: expected at least the program name in args but got none");
  const int64_t port = options.master_port() > 0 ? options.master_port() : free_port();
  TORCH_CHECK(port < 65536, "cac_engine::launch_workers: expected a port in [0, 65535] but got ", port);

  static const std::set<std::string> replaced{"RANK",      "WORLD_SIZE",  "LOCAL_RANK",          "LOCAL_WORLD_SIZE",
                                              "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",         "SLURM_PROCID",
                                              "SLURM_NTASKS", "SLURM_LOCALID"};
  std::vector<std::string> inherited;
  bool has_omp = false;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    std::string variable(*entry);
    const std::string name = variable.substr(0, variable.find('='));
    if (name == "OMP_NUM_THREADS") has_omp = true;
    if (replaced.count(name) == 0) inherited.push_back(std::move(variable));
  }

  // Everything the children need is built before fork: between fork and exec only
  // async-signal-safe calls.
  std::vector<std::vector<std::string>> environments(static_cast<size_t>(nproc), inherited);
  for (int64_t rank = 0; rank < nproc; ++rank) {
    auto& environment = environments[static_cast<size_t>(rank)];
    environment.push_back("RANK=" + std::to_string(rank));
    environment.push_back("LOCAL_RANK=" + std::to_string(rank));
    environment.push_back("GROUP_RANK=0");
    environment.push_back("WORLD_SIZE=" + std::to_string(nproc));
    environment.push_back("LOCAL_WORLD_SIZE=" + std::to_string(nproc));
    environment.push_back("MASTER_ADDR=" + options.master_addr());
    environment.push_back("MASTER_PORT=" + std::to_string(port));
    if (!has_omp && nproc > 1 && options.single_thread_default()) environment.push_back("OMP_NUM_THREADS=1");
  }
  std::vector<std::vector<char*>> envps(environments.size());
  for (size_t rank = 0; rank < environments.size(); ++rank) {
    for (auto& variable : environments[rank]) envps[rank].push_back(variable.data());
    envps[rank].push_back(nullptr);
  }
  std::vector<std::string> arguments = args;
  std::vector<char*> argv;
  for (auto& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();

  LaunchResult result;
  result.exit_codes.assign(static_cast<size_t>(nproc), -1);
  std::vector<pid_t> pids(static_cast<size_t>(nproc), -1);
  std::fflush(stdout);
  std::fflush(stderr);
  for (int64_t rank = 0; rank < nproc; ++rank) {
    const pid_t pid = ::fork();
    if (pid == 0) {
#ifdef __linux__
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(128 + SIGTERM);
#endif
      ::execve("/proc/self/exe", argv.data(), envps[static_cast<size_t>(rank)].data());
      ::_exit(127);
    }
    if (pid < 0) {
      const int error = errno;
      for (int64_t started = 0; started < rank; ++started) ::kill(pids[static_cast<size_t>(started)], SIGKILL);
      for (int64_t started = 0; started < rank; ++started) ::waitpid(pids[static_cast<size_t>(started)], nullptr, 0);
      TORCH_CHECK(false, "cac_engine::launch_workers: expected to start worker ", rank, " but fork failed with errno ",
                  error, " (", std::strerror(error), ")");
    }
    pids[static_cast<size_t>(rank)] = pid;
  }

  int64_t running = nproc;
  bool stopping = false;
  bool killed = false;
  auto deadline = std::chrono::steady_clock::now();
  while (running > 0) {
    for (int64_t rank = 0; rank < nproc; ++rank) {
      auto& code = result.exit_codes[static_cast<size_t>(rank)];
      if (code >= 0) continue;
      int status = 0;
      const pid_t done = ::waitpid(pids[static_cast<size_t>(rank)], &status, WNOHANG);
      if (done == 0 || (done < 0 && errno == EINTR)) continue;
      if (done < 0) {
        code = 255;  // not our child any more (reaped elsewhere)
      } else if (WIFEXITED(status)) {
        code = WEXITSTATUS(status);
      } else if (WIFSIGNALED(status)) {
        code = 128 + WTERMSIG(status);
      } else {
        continue;  // stopped or continued
      }
      --running;
      if (code != 0 && result.failed_rank < 0) {
        result.failed_rank = rank;
        result.exit_code = code;
        if (options.kill_on_failure() && running > 0) {
          stopping = true;
          deadline = std::chrono::steady_clock::now() + options.kill_grace();
          for (int64_t other = 0; other < nproc; ++other)
            if (result.exit_codes[static_cast<size_t>(other)] < 0) ::kill(pids[static_cast<size_t>(other)], SIGTERM);
        }
      }
    }
    if (running == 0) break;
    if (stopping && !killed && std::chrono::steady_clock::now() >= deadline) {
      killed = true;
      for (int64_t other = 0; other < nproc; ++other)
        if (result.exit_codes[static_cast<size_t>(other)] < 0) ::kill(pids[static_cast<size_t>(other)], SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return result;
}

int launch_local(int nproc, int argc, char** argv) {
  TORCH_CHECK(argc > 0 && argv != nullptr, "cac_engine::launch_local: expected argv with the program name but got ",
              argc, " arguments");
  std::vector<std::string> args(argv, argv + argc);
  const LaunchResult result = launch_workers(nproc, args, LaunchOptions().master_addr("127.0.0.1"));
  if (result.failed_rank >= 0)
    std::cerr << "cac_engine::launch_local: worker rank " << result.failed_rank << " of " << nproc
              << " exited with code " << result.exit_code << "; stopped the others" << std::endl;
  return result.exit_code;
}

}  // namespace cac_engine
