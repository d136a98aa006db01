#pragma once
// Helpers shared by the test suites.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <stdexcept>
#include <string>

#include <gtest/gtest.h>

#include "cspn_test_paths.hpp"

namespace cspn::test {

// ../shared/data next to the checkout; CSPN_SHARED_DATA overrides it.
inline std::filesystem::path shared_data() {
  if (const char* env = std::getenv("CSPN_SHARED_DATA")) return env;
  return std::filesystem::path(kSourceDir) / ".." / "shared" / "data";
}

// A fresh, empty scratch directory under the build tree, unique per test.
inline std::filesystem::path scratch_dir(const std::string& name) {
  auto dir = std::filesystem::path(kBinaryDir) / "test-scratch" / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// A file's bytes ("" when it cannot be read).
inline std::string file_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Writes `bytes` as the whole of file `p`.
inline void write_bytes(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}

// The message of the E that fn() throws; a test failure, and "", when it throws none.
template <class E = std::runtime_error>
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "no exception";
  return {};
}

// Whether `text` holds `part`.
inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// The tiny both-halves model that the ctest fixture "tiny_model" trains (tests/fixtures), and the
// synthetic scenes it was trained on.
inline std::filesystem::path tiny_model() { return std::filesystem::path(kBinaryDir) / "fixtures/tiny/run/model.cspn"; }
inline std::filesystem::path tiny_scenes() { return std::filesystem::path(kBinaryDir) / "fixtures/tiny/scenes"; }

}  // namespace cspn::test

// Skips the current test, saying why, when the fixture model is not there (a test run outside ctest).
#define CSPN_REQUIRE_TINY_MODEL()                                                                       \
  do {                                                                                                  \
    if (!std::filesystem::exists(::cspn::test::tiny_model()))                                           \
      GTEST_SKIP() << "no " << ::cspn::test::tiny_model() << ": run through ctest (fixture tiny_model)"; \
  } while (0)

// Skips the current test, saying why, when a folder of ../shared/data is not there.
#define CSPN_REQUIRE_SHARED(sub)                                                         \
  do {                                                                                   \
    if (!std::filesystem::exists(::cspn::test::shared_data() / (sub)))                   \
      GTEST_SKIP() << "shared data not found: " << (::cspn::test::shared_data() / (sub)) \
                   << " (set CSPN_SHARED_DATA or check out ../shared)";                  \
  } while (0)

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vector>

extern char** environ;

namespace cspn::test {

// Starts argv[0] with the given arguments (no shell), its output going to this process's, or its
// standard output to `stdout_file` and its standard error to `stderr_file` when they are named.
// `env` ("NAME=value") is added to this process's environment.
inline pid_t spawn_process(const std::vector<std::string>& argv, const std::string& stdout_file = "",
                           const std::string& stderr_file = "", const std::vector<std::string>& env = {}) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<char*> environment;
  for (const auto& e : env) environment.push_back(const_cast<char*>(e.c_str()));
  for (char** e = environ; *e; ++e) environment.push_back(*e);
  environment.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (!stdout_file.empty())
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, stdout_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (!stderr_file.empty())
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, stderr_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environment.data());
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

// Runs a process to completion; its exit code, or -1 if it could not start or was killed.
inline int run_process(const std::vector<std::string>& argv, const std::string& stdout_file = "",
                       const std::string& stderr_file = "") {
  const pid_t pid = spawn_process(argv, stdout_file, stderr_file);
  if (pid < 0) return -1;
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace cspn::test
