// The model-file loader (safetensors container, metadata, checksum, stored config) on arbitrary
// bytes, and the plain safetensors reader under it.
#include "cspn/core/io/model_file.hpp"
#include "cspn/core/io/weights.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto file = cspn::fuzz::scratch() / "model.cspn";
  cspn::fuzz::write(file, data, size);
  return cspn::fuzz::expect_clean([&] {
    try {
      cspn::read_safetensors(file.string());
    } catch (const std::runtime_error&) {  // its documented errors name the file and the field
    }
    cspn::load_model_file(file.string());
  });
}
