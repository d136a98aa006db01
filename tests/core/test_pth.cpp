// Tests src/core/io/pth.cpp: hand-made PyTorch zip checkpoints, read as torch.save writes them, and
// damaged ones.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cspn/core/io/weights.hpp"
#include "common.hpp"

namespace fs = std::filesystem;

namespace {

using cspn::test::error_of;
using cspn::test::write_bytes;

// ---- hand-written pickles, the opcodes torch.save (protocol 2) emits

std::string le32(uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}
std::string str(const std::string& s) { return "X" + le32(static_cast<uint32_t>(s.size())) + s; }  // BINUNICODE
std::string int1(int v) { return std::string("K") + static_cast<char>(v); }                       // BININT1
std::string tuple(const std::vector<int>& v) {
  std::string s = "(";
  for (int x : v) s += int1(x);
  return s + "t";
}
const std::string kOrderedDict = "ccollections\nOrderedDict\n)R";  // GLOBAL, EMPTY_TUPLE, REDUCE
const std::string kBinput0("q\0", 2);                               // BINPUT 0

// _rebuild_tensor_v2(('storage', torch.<type>, key, 'cpu', numel), offset, size, stride, False, OrderedDict())
std::string tensor(const std::string& type, const std::string& key, int numel, int offset,
                   const std::vector<int>& size, const std::vector<int>& stride) {
  return "ctorch._utils\n_rebuild_tensor_v2\n((" + str("storage") + "ctorch\n" + type + "\n" +
         str(key) + str("cpu") + int1(numel) + "tQ" + int1(offset) + tuple(size) + tuple(stride) +
         "\x89" + kOrderedDict + "tR";
}

// A zip checkpoint laid out as torch.save does: <name>/data.pkl, <name>/data/<key>, version.
void write_checkpoint(const fs::path& path, const std::string& pickle,
                      const std::map<std::string, torch::Tensor>& storages) {
  caffe2::serialize::PyTorchStreamWriter writer(path.string());
  writer.writeRecord("data.pkl", pickle.data(), pickle.size());
  for (const auto& [key, t] : storages)
    writer.writeRecord("data/" + key, t.data_ptr(), static_cast<size_t>(t.numel() * t.element_size()));
  writer.writeEndOfFile();
}

}  // namespace

TEST(Pth, ReadsHandWrittenCheckpoint) {
  const auto dir = cspn::test::scratch_dir("pth_handwritten");
  const auto storage = torch::arange(8, torch::kFloat32);  // one storage, viewed twice
  const auto steps = torch::tensor({int64_t{5}});
  // OrderedDict{"t": storage[1:7] viewed [2,3] with strides (1,2); "steps": int64 scalar;
  // "shared": the first 4 elements of the same storage as [4]}, memoised as torch.save does.
  std::string p = std::string("\x80\x02") + kOrderedDict + kBinput0 + "(";
  p += str("t") + tensor("FloatStorage", "0", 8, 1, {2, 3}, {1, 2});
  p += str("steps") + tensor("LongStorage", "1", 1, 0, {}, {});
  p += str("shared") + tensor("FloatStorage", "0", 8, 0, {4}, {1});
  p += "u.";
  const auto path = dir / "ckpt.pth";
  write_checkpoint(path, p, {{"0", storage}, {"1", steps}});

  const auto sd = cspn::read_weights(path.string());
  ASSERT_EQ(sd.size(), 3u);
  EXPECT_EQ(sd[0].first, "t");
  EXPECT_EQ(sd[1].first, "steps");
  EXPECT_EQ(sd[2].first, "shared");
  auto expected = torch::empty({2, 3});
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j) expected[i][j] = static_cast<float>(1 + i + 2 * j);
  EXPECT_TRUE(torch::equal(sd[0].second, expected)) << sd[0].second;
  EXPECT_EQ(sd[1].second.scalar_type(), torch::kInt64);
  EXPECT_EQ(sd[1].second.dim(), 0);
  EXPECT_EQ(sd[1].second.item<int64_t>(), 5);
  EXPECT_TRUE(torch::equal(sd[2].second, torch::arange(4, torch::kFloat32)));
}

TEST(Pth, UnwrapsStateDictEntry) {
  const auto dir = cspn::test::scratch_dir("pth_wrapper");
  // {"epoch": 3, "state_dict": OrderedDict{"w": tensor [2]}}
  std::string p = std::string("\x80\x02}") + kBinput0 + "(" + str("epoch") + int1(3) + str("state_dict") +
                  kOrderedDict + "(" + str("w") + tensor("FloatStorage", "0", 2, 0, {2}, {1}) + "u" + "u.";
  const auto path = dir / "wrapped.pth";
  write_checkpoint(path, p, {{"0", torch::tensor({4.f, 2.f})}});
  const auto sd = cspn::read_pth(path.string());
  ASSERT_EQ(sd.size(), 1u);
  EXPECT_EQ(sd[0].first, "w");
  EXPECT_TRUE(torch::equal(sd[0].second, torch::tensor({4.f, 2.f})));
}

TEST(Pth, BadCheckpointsFailWithPathOpcodeAndOffset) {
  const auto dir = cspn::test::scratch_dir("pth_bad");
  const auto opcode = dir / "opcode.pth";
  write_checkpoint(opcode, std::string("\x80\x02}\xff."), {});
  auto msg = error_of([&] { cspn::read_pth(opcode.string()); });
  EXPECT_NE(msg.find(opcode.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("opcode 0xff"), std::string::npos) << msg;
  EXPECT_NE(msg.find("offset 3"), std::string::npos) << msg;

  const auto truncated = dir / "truncated.pth";
  write_checkpoint(truncated, std::string("\x80\x02}X\x10\0\0\0ab", 10), {});
  EXPECT_NE(error_of([&] { cspn::read_pth(truncated.string()); }).find("truncated"), std::string::npos);

  const auto short_storage = dir / "short.pth";
  write_checkpoint(short_storage,
                   std::string("\x80\x02}(") + str("w") + tensor("FloatStorage", "0", 4, 0, {4}, {1}) + "u.",
                   {{"0", torch::zeros({2})}});
  EXPECT_NE(error_of([&] { cspn::read_pth(short_storage.string()); }).find("data/0"), std::string::npos);

  const auto not_tensors = dir / "not_tensors.pth";
  write_checkpoint(not_tensors, std::string("\x80\x02}(") + str("epoch") + int1(3) + "u.", {});
  EXPECT_NE(error_of([&] { cspn::read_pth(not_tensors.string()); }).find("'epoch'"), std::string::npos);

  const auto not_zip = dir / "not_zip.pth";
  write_bytes(not_zip, "PK\x03\x04 but not really a zip archive");
  EXPECT_NE(error_of([&] { cspn::read_pth(not_zip.string()); }).find(not_zip.string()), std::string::npos);
}
