// Tests src/engine/distributed.cpp, data-parallel training: the launch variables of torchrun and
// Slurm, and the real command run as two ranks over loopback (Gloo, one thread each): against one
// process on the same global batch, and when a rank dies, stops or never comes.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "cspn/core/io/model_file.hpp"
#include "cspn/core/model/batch_norm.hpp"
#include "cspn/core/model/cspn_net.hpp"
#include "cspn/data/synth.hpp"
#include "cspn/engine/distributed.hpp"
#include "common.hpp"
#include "train_fixtures.hpp"

using namespace cspn;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

LaunchInfo launch_from(const std::map<std::string, std::string>& vars) {
  return launch_info([&](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
  });
}

// A TCP port nobody listens on now.
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// 100 synthetic 128x128 images, made once per test process.
const std::string& synthetic_set() {
  static const std::string dir = test::make_synthetic_set("dist-synth", 100, 5);
  return dir;
}

// No augmentation (each rank's share of a batch is then exactly the crops one process would cut),
// batch norm synchronised, plain SGD, one thread per process.
const char* kConfig = R"(
model: {keypoints: {backbone: resnet18, stages: 2, channels: 32, input_size: [64, 64], sigma: 1.5}}
data: {workers: 0, scale_aug: 0, rotate_aug: 0, shift_aug: 0, flip_aug: false, color_aug: 0, occlusion_aug: 0}
train: {optimizer: sgd, lr: 0.02, momentum: 0.9, batch_size: 4, warmup_iters: 0, val_every: 0, seed: 3,
        log_every: 1, threads: 1, sync_bn: true, dist_timeout_s: 20}
)";

fs::path config_file() {
  static const fs::path path = [] {
    const auto p = test::scratch_dir("dist-config-" + std::to_string(getpid())) / "dist.yaml";
    std::ofstream(p) << kConfig;
    return p;
  }();
  return path;
}

std::vector<std::string> train_command(const fs::path& out, const std::vector<std::string>& sets, bool resume = false) {
  std::vector<std::string> args{std::string(test::kBinaryDir) + "/cspn", "train", "--config", config_file().string(),
                                "--data", synthetic_set(), "--format", "fld", "--out", out.string(), "--quiet"};
  for (const auto& s : sets) args.insert(args.end(), {"--set", s});
  if (resume) args.push_back("--resume");
  return args;
}

// Rank `rank` of `world` as torchrun would start it, its standard error in out.rank<r>.err.
pid_t spawn_rank(const fs::path& out, const std::vector<std::string>& sets, int rank, int world, int port,
                 bool resume = false) {
  return test::spawn_process(train_command(out, sets, resume), "", out.string() + ".rank" + std::to_string(rank) + ".err",
                             {"RANK=" + std::to_string(rank), "WORLD_SIZE=" + std::to_string(world),
                              "LOCAL_RANK=" + std::to_string(rank), "LOCAL_WORLD_SIZE=" + std::to_string(world),
                              "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + std::to_string(port)});
}

int exit_code(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Waits for a process at most `limit`; its exit code, or -2 (and it is killed) when it outlived it.
int exit_code_within(pid_t pid, std::chrono::seconds limit) {
  const auto deadline = Clock::now() + limit;
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (Clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      return -2;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::vector<nlohmann::json> log_records(const fs::path& run, const std::string& type) {
  std::ifstream log(run / "log.jsonl");
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(log, line);) {
    auto rec = nlohmann::json::parse(line);
    if (rec["type"] == type) out.push_back(std::move(rec));
  }
  return out;
}

// Over every floating-point tensor together: the L2 norm of a - b, relative to that of b - start
// (how far training moved the weights); and that norm of b - start.
std::pair<double, double> relative_difference(const ModelFile& a, const ModelFile& b, const ModelFile& start) {
  EXPECT_EQ(a.tensors.size(), b.tensors.size());
  EXPECT_EQ(a.tensors.size(), start.tensors.size());
  double apart = 0, moved = 0;
  for (size_t i = 0; i < std::min({a.tensors.size(), b.tensors.size(), start.tensors.size()}); ++i) {
    EXPECT_EQ(a.tensors[i].first, b.tensors[i].first);
    EXPECT_EQ(a.tensors[i].first, start.tensors[i].first);
    if (!a.tensors[i].second.is_floating_point()) continue;
    apart += (a.tensors[i].second - b.tensors[i].second).pow(2).sum().item<double>();
    moved += (b.tensors[i].second - start.tensors[i].second).pow(2).sum().item<double>();
  }
  return {std::sqrt(apart / std::max(moved, 1e-30)), std::sqrt(moved)};
}

}  // namespace

TEST(Distributed, LaunchVariablesOfTorchrunAndSlurm) {
  const auto alone = launch_from({});
  EXPECT_EQ(alone.world_size, 1);
  EXPECT_EQ(alone.launcher, "");

  const auto torchrun = launch_from({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"},
                                     {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "29400"},
                                     {"TORCHELASTIC_USE_AGENT_STORE", "True"}, {"TORCHELASTIC_RESTART_COUNT", "2"},
                                     {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}});
  EXPECT_EQ(torchrun.launcher, "torchrun");  // torchrun's variables win inside a Slurm job
  EXPECT_EQ(torchrun.rank, 3);
  EXPECT_EQ(torchrun.world_size, 4);
  EXPECT_EQ(torchrun.local_rank, 1);
  EXPECT_EQ(torchrun.local_world_size, 2);
  EXPECT_EQ(torchrun.master_addr, "node7");
  EXPECT_EQ(torchrun.master_port, 29400);
  EXPECT_TRUE(torchrun.agent_store);
  EXPECT_EQ(torchrun.restart, 2);

  const auto slurm = launch_from({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"},
                                  {"SLURM_JOB_NODELIST", "gpu[007-009,012],cpu1"}});
  EXPECT_EQ(slurm.launcher, "slurm");
  EXPECT_EQ(slurm.rank, 5);
  EXPECT_EQ(slurm.world_size, 8);
  EXPECT_EQ(slurm.local_rank, 1);
  EXPECT_EQ(slurm.master_addr, "gpu007");
  EXPECT_EQ(slurm.master_port, 29500);
  EXPECT_EQ(launch_from({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_JOB_NODELIST", "a"},
                         {"MASTER_PORT", "12345"}}).master_port, 12345);

  EXPECT_EQ(first_host("node1"), "node1");
  EXPECT_EQ(first_host("node-a,node-b"), "node-a");
  EXPECT_EQ(first_host("rack[2-3]-n[01-04]"), "rack2-n01");
  EXPECT_THROW(first_host("gpu[1-2"), std::invalid_argument);

  const auto message = [](const std::map<std::string, std::string>& vars) {
    try {
      launch_from(vars);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "1"}}).find("RANK=2"),
            std::string::npos);
  EXPECT_NE(message({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1"}}).find("MASTER_ADDR"), std::string::npos);
  EXPECT_NE(message({{"RANK", "0"}, {"WORLD_SIZE", "two"}}).find("WORLD_SIZE=two"), std::string::npos);
  EXPECT_NE(message({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}}).find("SLURM_JOB_NODELIST"), std::string::npos);
}

TEST(Distributed, TwoRanksMatchOneProcessOnTheGlobalBatch) {
  const auto dir = test::scratch_dir("dist-match");
  const std::vector<std::string> sets{"train.iters=4"};
  const int port = free_port();
  const pid_t r0 = spawn_rank(dir / "ranks", sets, 0, 2, port), r1 = spawn_rank(dir / "ranks", sets, 1, 2, port);
  ASSERT_EQ(exit_code(r0), 0) << test::file_bytes(dir / "ranks.rank0.err");
  ASSERT_EQ(exit_code(r1), 0) << test::file_bytes(dir / "ranks.rank1.err");
  // One process on the same global batch: 2 ranks x 4 crops.
  auto single = sets;
  single.push_back("train.batch_size=8");
  ASSERT_EQ(test::run_process(train_command(dir / "single", single)), 0);

  // The two ranks end with the same weights, to the bit (compared by the run itself over Gloo).
  const auto agree = log_records(dir / "ranks", "ranks");
  ASSERT_EQ(agree.size(), 1u);
  EXPECT_EQ(agree[0]["max_weight_difference"].get<double>(), 0.0);
  // Each global batch's mean loss is the single process's (a step moves it by about 2.5%; measured
  // apart: under 1e-4 relative).
  const auto ranks_loss = log_records(dir / "ranks", "train"), single_loss = log_records(dir / "single", "train");
  ASSERT_EQ(ranks_loss.size(), 4u);
  ASSERT_EQ(single_loss.size(), 4u);
  for (size_t i = 0; i < 4; ++i)
    EXPECT_NEAR(ranks_loss[i]["loss"].get<double>(), single_loss[i]["loss"].get<double>(),
                1e-3 * single_loss[i]["loss"].get<double>()) << "iteration " << i + 1;

  // The weights match those of the single process far more closely than training moved them: a
  // gradient summed instead of averaged, or one rank's alone, would be off by a whole step. Not to
  // the bit: the synchronised batch norm combines its statistics in float64 and normalises in
  // other steps than LibTorch's, and at a fresh start the backbone's gradients are tiny residues of
  // much cancellation (measured: relative 2.3e-3 after 4 steps; 2 threads instead of 1: 5e-4).
  const auto ranks = load_model_file((dir / "ranks" / "model.cspn").string());
  const auto one = load_model_file((dir / "single" / "model.cspn").string());
  Config cfg;
  cfg.load_yaml_string(kConfig, "test config");
  torch::manual_seed(cfg.train.seed);
  CSPNNet start(cfg.model.keypoints, static_cast<int>(one.schema.num_landmarks()));
  ModelFile initial = one;
  initial.tensors.clear();
  for (auto& [name, tensor] : state_dict(*start)) initial.tensors.emplace_back("keypoints." + name, tensor);
  const auto [apart, moved] = relative_difference(ranks, one, initial);
  std::cout << "2 ranks vs 1 process: weights apart by " << apart << " of how far training moved them\n";
  EXPECT_GT(moved, 1e-3);
  EXPECT_LT(apart, 2e-2);
}

TEST(Distributed, KilledRankIsNamedAndTwoRanksResume) {
  const auto dir = test::scratch_dir("dist-kill");
  const auto run = dir / "run";
  const std::vector<std::string> sets{"train.epochs=4"};
  int port = free_port();
  const pid_t r0 = spawn_rank(run, sets, 0, 2, port), r1 = spawn_rank(run, sets, 1, 2, port);
  while (!fs::exists(run / "checkpoint-keypoints.pt")) {
    int status = 0;
    ASSERT_EQ(waitpid(r0, &status, WNOHANG), 0) << "rank 0 ended before its first checkpoint: "
                                                << test::file_bytes(run.string() + ".rank0.err");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(r1, SIGKILL);
  waitpid(r1, nullptr, 0);
  const auto killed = Clock::now();
  EXPECT_EQ(exit_code_within(r0, std::chrono::seconds(40)), 1);
  const auto err = test::file_bytes(run.string() + ".rank0.err");
  EXPECT_NE(err.find("lost rank 1 of 2"), std::string::npos) << err;
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - killed).count(), 20.0) << "train.dist_timeout_s is 20";
  ASSERT_FALSE(fs::exists(run / "model.cspn")) << "the run finished before the kill; nothing was tested";

  port = free_port();
  const pid_t s0 = spawn_rank(run, sets, 0, 2, port, true), s1 = spawn_rank(run, sets, 1, 2, port, true);
  ASSERT_EQ(exit_code(s0), 0) << test::file_bytes(run.string() + ".rank0.err");
  ASSERT_EQ(exit_code(s1), 0) << test::file_bytes(run.string() + ".rank1.err");
  const auto starts = log_records(run, "start");
  ASSERT_EQ(starts.size(), 2u);
  EXPECT_GE(starts[1]["resume_epoch"].get<int>(), 1);
  const auto epochs = log_records(run, "epoch");
  ASSERT_FALSE(epochs.empty());
  EXPECT_EQ(epochs.back()["epoch"], 4);
  EXPECT_TRUE(fs::exists(run / "model.cspn"));
}

TEST(Distributed, StoppedRankIsNamedWithinTheTimeout) {
  const auto dir = test::scratch_dir("dist-stop");
  const auto run = dir / "run";
  const std::vector<std::string> sets{"train.epochs=50", "train.dist_timeout_s=5"};
  const int port = free_port();
  const pid_t r0 = spawn_rank(run, sets, 0, 2, port), r1 = spawn_rank(run, sets, 1, 2, port);
  while (log_records(run, "train").size() < 2) {
    int status = 0;
    ASSERT_EQ(waitpid(r0, &status, WNOHANG), 0) << test::file_bytes(run.string() + ".rank0.err");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(r1, SIGSTOP);  // alive, but silent: a hung rank
  const auto stopped = Clock::now();
  const int code = exit_code_within(r0, std::chrono::seconds(60));
  const double waited = std::chrono::duration<double>(Clock::now() - stopped).count();
  kill(r1, SIGKILL);
  waitpid(r1, nullptr, 0);
  EXPECT_EQ(code, 1);
  const auto err = test::file_bytes(run.string() + ".rank0.err");
  EXPECT_NE(err.find("lost rank 1 of 2"), std::string::npos) << err;
  EXPECT_LT(waited, 5 + 10.0) << "the timeout is 5 s; the heartbeat check takes 3";
}

TEST(Distributed, RankThatNeverJoinsFailsTheRendezvous) {
  const auto dir = test::scratch_dir("dist-alone");
  const auto start = Clock::now();
  const pid_t r0 = spawn_rank(dir / "run", {"train.dist_timeout_s=3"}, 0, 3, free_port());
  EXPECT_EQ(exit_code_within(r0, std::chrono::seconds(30)), 1);
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 20.0);
  const auto err = test::file_bytes(dir.string() + "/run.rank0.err");
  EXPECT_NE(err.find("ranks 1, 2 of 3 did not join within 3 s"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir / "run")) << "nothing is written before every rank is there";
}

TEST(Distributed, SynchronisedBatchNormOverTwoRanksIsOneBatchNormOverTheWholeBatch) {
  // Two ranks as two threads of this process, over loopback.
  torch::manual_seed(0);
  const auto x = torch::randn({8, 6, 5, 5}) * 0.7 + 2.0;
  const auto upstream = torch::randn({8, 6, 5, 5});
  BatchNorm whole(6);
  const auto x_whole = x.clone().requires_grad_(true);
  (whole->forward(x_whole) * upstream).sum().backward();

  LaunchInfo launch;
  launch.world_size = 2;
  launch.master_port = free_port();
  std::vector<torch::Tensor> y(2), dx(2), dw(2), running_var(2);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r)
    ranks.emplace_back([&, r] {
      LaunchInfo mine = launch;
      mine.rank = r;
      Distributed dist(mine, 20, torch::kCPU);
      BatchNorm half(6);
      synchronise_batch_norm(*half, [&](const torch::Tensor& t) { return dist.sum_differentiable(t); });
      const auto xr = x.narrow(0, 4 * r, 4).clone().requires_grad_(true);
      y[r] = half->forward(xr);
      (y[r] * upstream.narrow(0, 4 * r, 4)).sum().backward();
      dx[r] = xr.grad();
      dw[r] = half->weight.grad();
      running_var[r] = half->running_var.clone();
      dist.barrier();
    });
  for (auto& t : ranks) t.join();
  EXPECT_TRUE(torch::allclose(torch::cat(dx), x_whole.grad(), 1e-4, 1e-5)) << (torch::cat(dx) - x_whole.grad()).abs().max();
  EXPECT_TRUE(torch::allclose(dw[0] + dw[1], whole->weight.grad(), 1e-4, 1e-5));
  EXPECT_TRUE(torch::allclose(running_var[0], whole->running_var, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(running_var[1], whole->running_var, 1e-5, 1e-6));
}

TEST(Distributed, TorchrunLaunchesTheRanks) {
  if (test::run_process({"/usr/bin/python3", "-c", "import torch.distributed.run"}, "/dev/null", "/dev/null") != 0)
    GTEST_SKIP() << "no PyTorch for /usr/bin/python3 (Debian: python3-torch), so no torchrun";
  for (const int ranks : {1, 2}) {  // one rank gets a process group of its own too
    SCOPED_TRACE(std::to_string(ranks) + " ranks");
    const auto dir = test::scratch_dir("dist-torchrun-" + std::to_string(ranks));
    auto command = train_command(dir / "run", {"train.iters=2"});
    // Debian's torchrun (PyTorch 1.13 on Python 3.11) fails on its own default --redirects/--tee of 0.
    command.insert(command.begin(), {"/usr/bin/python3", "-m", "torch.distributed.run", "--no_python", "--nproc_per_node",
                                     std::to_string(ranks), "--master_port", std::to_string(free_port()), "--redirects",
                                     "2", "--tee", "2", "--log_dir", (dir / "torchrun").string()});
    ASSERT_EQ(test::run_process(command, (dir / "out.txt").string(), (dir / "err.txt").string()), 0)
        << test::file_bytes(dir / "err.txt");
    const auto start = log_records(dir / "run", "start");
    ASSERT_EQ(start.size(), 1u);
    EXPECT_EQ(start[0]["world_size"], ranks);
    const auto compared = log_records(dir / "run", "ranks");
    ASSERT_EQ(compared.size(), 1u);
    EXPECT_EQ(compared[0]["world_size"], ranks);
    EXPECT_EQ(compared[0]["max_weight_difference"].get<double>(), 0.0);
    EXPECT_TRUE(fs::exists(dir / "run" / "model.cspn"));
  }
}
