#include "launcher.hpp"

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
#include <cstring>
#include <iostream>
#include <set>
#include <thread>

extern char** environ;

namespace cac_engine {

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

  static const std::set<std::string> replaced{"RANK",         "WORLD_SIZE",   "LOCAL_RANK",  "LOCAL_WORLD_SIZE",
                                              "GROUP_RANK",   "MASTER_ADDR",  "MASTER_PORT", "SLURM_PROCID",
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
