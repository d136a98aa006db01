// Tests src/core/runtime.cpp: the process's memory settings (keep_freed_memory).
#include <malloc.h>

#include <cstdlib>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cspn/core/runtime.hpp"

using namespace cspn;

TEST(Process, HeapOnlyKeepsLargeBlocksOffTheMapsUntilSwitchedBack) {
  // Blocks above glibc's 32 MiB threshold are mapped unless the heap already has room for them.
  const auto blocks_mapped_by_a_malloc_of = [](size_t mib) {
    const size_t before = mallinfo2().hblks;
    auto* block = static_cast<volatile char*>(std::malloc(mib << 20));
    block[0] = 1;
    const size_t during = mallinfo2().hblks;
    std::free(const_cast<char*>(block));
    return during - before;
  };
  keep_freed_memory(/*heap_only=*/false);
  EXPECT_EQ(blocks_mapped_by_a_malloc_of(64), 1u);
  keep_freed_memory(/*heap_only=*/true);
  EXPECT_EQ(blocks_mapped_by_a_malloc_of(64), 0u);
  keep_freed_memory(/*heap_only=*/false);  // more than the heap now holds free
  EXPECT_EQ(blocks_mapped_by_a_malloc_of(256), 1u);
}
