// Landmark schema files (schemas/*.yaml, or a user's own) on arbitrary bytes.
#include "cspn/core/schema.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  return cspn::fuzz::expect_clean([&] { cspn::LandmarkSchema::from_yaml(text, "fuzz.yaml"); });
}
