// Tests src/core/bench.cpp: the timing that `cspn bench` uses, which runs the functions it compares in
// turn.
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cspn/core/bench.hpp"

using namespace cspn;

TEST(BenchCommand, AlternatingTimingRunsTheFunctionsInTurn) {
  std::string order;
  const auto medians = median_ms_alternating(
      {[&] { order += 'a'; }, [&] { order += 'b'; }, [&] { order += 'c'; }}, 3, torch::Device(torch::kCPU));
  EXPECT_EQ(order, "aabbcc" "abcabcabc");  // two warm-up runs each, then one of each per round
  ASSERT_EQ(medians.size(), 3u);
  for (double ms : medians) EXPECT_GE(ms, 0.0);
}
