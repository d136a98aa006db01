// The DeepFashion FLD reader on arbitrary bytes: the input is split at the first two 0x00 bytes into
// list_landmarks.txt, list_bbox.txt and list_eval_partition.txt.
#include <string>

#include "cspn/data/readers.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const size_t a = bytes.find('\0');
  const size_t b = a == std::string::npos ? std::string::npos : bytes.find('\0', a + 1);
  const std::string landmarks = bytes.substr(0, a);
  const std::string boxes = a == std::string::npos ? "" : bytes.substr(a + 1, b == std::string::npos ? b : b - a - 1);
  const std::string split = b == std::string::npos ? "" : bytes.substr(b + 1);
  const auto root = cspn::fuzz::scratch() / "fld";
  const auto put = [&](const char* rel, const std::string& text) {
    cspn::fuzz::write(root / rel, reinterpret_cast<const uint8_t*>(text.data()), text.size());
  };
  put("Anno/list_landmarks.txt", landmarks);
  put("Anno/list_bbox.txt", boxes);
  put("Eval/list_eval_partition.txt", split);
  cspn::ReadOptions opt;
  opt.check_images = false;
  opt.skip_bad = size % 2 == 1;
  return cspn::fuzz::expect_clean([&] { cspn::read_fld(root.string(), opt); });
}
