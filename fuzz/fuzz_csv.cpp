// The comma-separated readers on arbitrary bytes: the flat CSV of ziegler_robot_landmarks (info.csv)
// and FashionAI's train.csv.
#include "cspn/data/readers.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto file = cspn::fuzz::scratch() / "info.csv";
  cspn::fuzz::write(file, data, size);
  cspn::ReadOptions opt;
  opt.check_images = false;
  opt.skip_bad = size % 2 == 1;  // both the failing and the skipping paths
  static const cspn::LandmarkSchema fashionai = cspn::LandmarkSchema::load("fashionai");
  cspn::fuzz::expect_clean([&] { cspn::read_csv(file.string(), opt); });
  cspn::ReadOptions f = opt;
  f.schema = fashionai;
  return cspn::fuzz::expect_clean([&] { cspn::read_fashionai(file.string(), f); });
}
