#include "distributed.hpp"

#include "errors.hpp"

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

#include <torch/version.h>
#include <torch/torch.h>

#include <cstdlib>
#include <map>
#include <optional>
#include <utility>

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
  TORCH_CHECK(env.world_size >= 1, "cac_engine::ProcessGroup::init: expected world_size >= 1 but got ", env.world_size);
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
                timeout.count() / 1000.0,
                " s (is every rank started, and MASTER_ADDR/MASTER_PORT the same "
                "everywhere?): ",
                error_message(error));
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
                " failed: a peer died or did not answer within the timeout of ", timeout.count() / 1000.0,
                " s: ", error_message(error));
  }
}

}  // namespace

void ProcessGroup::bucketed(std::vector<torch::Tensor>& tensors, const char* what, int64_t root) {
  check_ranks(what);
  for (size_t i = 0; i < tensors.size(); ++i)
    TORCH_CHECK(tensors[i].defined(), "cac_engine::ProcessGroup::", what,
                ": expected defined tensors but got an "
                "undefined one at index ",
                i);
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
// Parameters and gradients

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

std::shared_ptr<ProcessGroup> join_environment_group(torch::Device& device, std::chrono::milliseconds timeout) {
  const DistributedEnv env = DistributedEnv::from_env();
  auto group = std::make_shared<ProcessGroup>();
  if (!env.distributed()) return group;
  if (device.is_cuda() && !device.has_index()) device = torch::Device(torch::kCUDA, env.local_rank);
  group->init(env, device, timeout);
  return group;
}

cac_models::AllReduceSum sum_over(std::shared_ptr<ProcessGroup> group) {
  if (!group || group->size() == 1) return {};
  return [group](std::vector<torch::Tensor>& tensors) { group->all_reduce_sum(tensors); };
}

int64_t synchronize_batch_norms(torch::nn::Module& module, std::shared_ptr<ProcessGroup> group) {
  cac_models::AllReduceSum sum = sum_over(std::move(group));
  if (!sum) {
    cac_models::set_sync_batch_norm(module, nullptr);
    return 0;
  }
  return cac_models::set_sync_batch_norm(module, std::make_shared<const cac_models::AllReduceSum>(std::move(sum)));
}

}  // namespace cac_engine
