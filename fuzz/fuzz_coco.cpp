// The COCO keypoint JSON reader on arbitrary bytes.
#include "cspn/data/readers.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto file = cspn::fuzz::scratch() / "coco.json";
  cspn::fuzz::write(file, data, size);
  cspn::ReadOptions opt;
  opt.check_images = false;
  opt.skip_bad = size % 2 == 1;
  return cspn::fuzz::expect_clean([&] { cspn::read_coco(file.string(), opt); });
}
