// The image checks before decoding (header size, completeness) and the decoder behind them, on
// arbitrary bytes: what `cspn serve` does with every upload.
#include "cspn/cspn.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  // A small pixel budget: the header checks must refuse large images before any decoding.
  return cspn::fuzz::expect_clean([&] { cspn::decode_image(bytes, "fuzz", 1 << 20); });
}
