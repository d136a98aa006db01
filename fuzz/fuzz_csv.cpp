// The flat CSV reader (ziegler_robot_landmarks' info.csv) on arbitrary bytes.
#include "cspn/data/readers.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto file = cspn::fuzz::scratch() / "info.csv";
  cspn::fuzz::write(file, data, size);
  cspn::ReadOptions opt;
  opt.check_images = false;
  opt.skip_bad = size % 2 == 1;  // both the failing and the skipping paths
  return cspn::fuzz::expect_clean([&] { cspn::read_csv(file.string(), opt); });
}
