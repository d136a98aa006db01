// The YAML config (file text, then validation) on arbitrary bytes.
#include "cspn/core/config.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  return cspn::fuzz::expect_clean([&] {
    cspn::Config cfg;
    cfg.load_yaml_string(text, "fuzz.yaml");
    cfg.validate();
  });
}
