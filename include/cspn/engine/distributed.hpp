#pragma once
// Data-parallel training on PyTorch's c10d: one process per device, launched the way torchrun or
// Slurm's srun launch them, meeting through a TCPStore, then Gloo (CPU) or NCCL (CUDA) collectives.
// A rank that dies or stops answering makes the others fail within the timeout, naming it.
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/types.h>

namespace cspn {

// Where this process stands in a launch: its rank among world_size processes, its rank on its
// machine (which GPU it takes), and where the rendezvous store listens.
struct LaunchInfo {
  int rank = 0, world_size = 1, local_rank = 0;
  int local_world_size = 1;  // ranks on this machine (torchrun's LOCAL_WORLD_SIZE): they share its
                             // cores; Slurm gives each task its own cores (CPU affinity) instead
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string launcher;      // "torchrun", "slurm", or empty: a single process
  bool agent_store = false;  // torchrun's agent hosts the store (TORCHELASTIC_USE_AGENT_STORE)
  int restart = 0;           // torchrun's restart count: keys of an earlier attempt are not read
};

using Environment = std::function<std::optional<std::string>(const std::string&)>;

// From torchrun's RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT or, where those are not set,
// Slurm's SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID and the first host of SLURM_JOB_NODELIST (or
// MASTER_ADDR / MASTER_PORT where set; port 29500 otherwise). Neither: one process. Throws
// std::invalid_argument naming the variable that is missing or malformed.
LaunchInfo launch_info(const Environment& env);
LaunchInfo launch_info_from_environment();

// The first host of a Slurm node list: "gpu[003-005,010],cpu1" -> "gpu003".
std::string first_host(const std::string& node_list);

// A collective that could not complete: a rank died, hung or never joined.
struct DistributedError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Averages the gradients of a network's parameters over the processes, in buckets of about 25 MB
// (1 MB for the first) sent while backward still runs: a bucket goes as soon as backward has
// produced all its gradients and every earlier bucket has gone, so that all ranks issue the same
// collectives in the same order. (c10d's own Reducer cannot be used: Debian's LibTorch lacks headers
// it includes.)
class GradientAverager {
 public:
  ~GradientAverager();
  void before_backward();  // arms the gradient hooks
  void after_backward();   // sends what is left (parameters without a gradient count as zero),
                           // waits, and leaves every parameter's .grad the average over the ranks

 private:
  friend class Distributed;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class Distributed {
 public:
  // Joins the others: every rank must arrive within timeout_s or each fails naming those missing.
  // CUDA devices communicate over NCCL where LibTorch was built with it, CPUs over Gloo.
  Distributed(const LaunchInfo& launch, double timeout_s, torch::Device device);
  ~Distributed();
  Distributed(const Distributed&) = delete;
  Distributed& operator=(const Distributed&) = delete;

  int rank() const { return launch_.rank; }
  int world_size() const { return launch_.world_size; }
  bool is_main() const { return launch_.rank == 0; }
  const LaunchInfo& launch() const { return launch_; }

  // Blocking collectives; the failure of another rank surfaces as DistributedError (see lost()).
  torch::Tensor sum(const torch::Tensor& t);                // every process's t, summed
  torch::Tensor sum_differentiable(const torch::Tensor& t);  // as sum(); in backward the gradient summed too
  void broadcast(const std::vector<torch::Tensor>& tensors);  // rank 0's values into everyone's tensors
  void barrier();

  // `overlap` false: every bucket goes after backward (for networks where some parameters may get
  // no gradient in a step, which would make ranks reach the buckets in different orders).
  std::unique_ptr<GradientAverager> average_gradients(const std::vector<torch::Tensor>& params, bool overlap);

  // Explains a failed collective: the ranks whose heartbeat stopped (dead, stopped or unreachable)
  // are named in a DistributedError. When every rank is still beating, the cause was this
  // process's own and is rethrown as it was.
  [[noreturn]] void lost(std::exception_ptr cause);

 private:
  struct Impl;
  LaunchInfo launch_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cspn
