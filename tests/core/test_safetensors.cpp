// Tests src/core/io/safetensors.cpp: safetensors round trips and byte layout, and corrupt files.
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "cspn/core/io/weights.hpp"
#include "common.hpp"

namespace fs = std::filesystem;

namespace {

using cspn::test::error_of;
using cspn::test::write_bytes;

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST(Safetensors, RoundTripsEveryDtypeInOrder) {
  const auto dir = cspn::test::scratch_dir("safetensors_roundtrip");
  cspn::StateDict in{
      {"z.f64", torch::randn({2, 3}, torch::kFloat64)},
      {"a.f32", torch::randn({4, 5}).t()},  // non-contiguous: written contiguous
      {"m.f16", torch::randn({3}).to(torch::kFloat16)},
      {"b.bf16", torch::randn({2, 2}).to(torch::kBFloat16)},
      {"n.i64", torch::tensor(int64_t{1} << 40)},  // 0-dim
      {"c.i32", torch::randint(-1000, 1000, {7}, torch::kInt32)},
      {"i16", torch::randint(-1000, 1000, {2, 1, 2}, torch::kInt16)},
      {"i8", torch::randint(-100, 100, {5}, torch::kInt8)},
      {"u8", torch::randint(0, 255, {6}, torch::kUInt8)},
      {"bool", torch::rand({4}) > 0.5},
      {"empty", torch::zeros({0, 3})},
  };
  const std::map<std::string, std::string> meta{{"who", "test"}, {"json", "{\"a\": [1, 2]}"}};
  const auto path = (dir / "w.safetensors").string();
  cspn::write_safetensors(path, in, meta);

  std::map<std::string, std::string> meta_back;
  const auto out = cspn::read_safetensors(path, &meta_back);
  EXPECT_EQ(meta_back, meta);
  ASSERT_EQ(out.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(out[i].first, in[i].first);
    EXPECT_EQ(out[i].second.scalar_type(), in[i].second.scalar_type()) << in[i].first;
    EXPECT_TRUE(torch::equal(out[i].second, in[i].second)) << in[i].first;
  }
  // Nothing but the file is left behind (the temporary was renamed).
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
  EXPECT_EQ(cspn::read_weights(path).size(), in.size());
}

TEST(Safetensors, ByteLayoutFollowsTheFormat) {
  const auto dir = cspn::test::scratch_dir("safetensors_layout");
  const auto path = dir / "w.safetensors";
  const auto a = torch::tensor({1.5f, -2.0f, 3.25f});
  const auto b = torch::tensor({int64_t{7}, int64_t{-9}});
  cspn::write_safetensors(path.string(), {{"a", a}, {"b", b}});

  const std::string bytes = read_bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);  // data area aligned
  const auto header = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["a"]["dtype"], "F32");
  EXPECT_EQ(header["a"]["shape"], nlohmann::json({3}));
  EXPECT_EQ(header["a"]["data_offsets"], nlohmann::json({0, 12}));
  EXPECT_EQ(header["b"]["dtype"], "I64");
  EXPECT_EQ(header["b"]["data_offsets"], nlohmann::json({12, 28}));
  EXPECT_FALSE(header.contains("__metadata__"));
  ASSERT_EQ(bytes.size(), 8 + n + 28);
  float f[3];
  std::memcpy(f, bytes.data() + 8 + n, sizeof f);
  EXPECT_EQ(f[0], 1.5f);
  EXPECT_EQ(f[2], 3.25f);
  int64_t i64;
  std::memcpy(&i64, bytes.data() + 8 + n + 20, sizeof i64);
  EXPECT_EQ(i64, -9);
}

TEST(Safetensors, CorruptFilesFailWithThePath) {
  const auto dir = cspn::test::scratch_dir("safetensors_corrupt");
  const auto good = dir / "good.safetensors";
  cspn::write_safetensors(good.string(), {{"w", torch::randn({16, 16})}});
  const std::string bytes = read_bytes(good);

  const auto truncated = dir / "truncated.safetensors";
  write_bytes(truncated, bytes.substr(0, bytes.size() - 4));
  auto msg = error_of([&] { cspn::read_safetensors(truncated.string()); });
  EXPECT_NE(msg.find(truncated.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("'w'"), std::string::npos) << msg;

  const auto tiny = dir / "tiny.safetensors";
  write_bytes(tiny, "abc");
  EXPECT_NE(error_of([&] { cspn::read_safetensors(tiny.string()); }).find(tiny.string()), std::string::npos);

  const auto huge = dir / "huge.safetensors";
  write_bytes(huge, std::string("\xff\xff\xff\x00\x00\x00\x00\x00{}", 10));
  EXPECT_NE(error_of([&] { cspn::read_safetensors(huge.string()); }).find("exceeds"), std::string::npos);

  auto edit_header = [&](const std::string& from, const std::string& to) {
    std::string b = bytes;
    b.replace(b.find(from), from.size(), to);  // same length keeps the layout
    const auto p = dir / "edited.safetensors";
    write_bytes(p, b);
    return error_of([&] { cspn::read_safetensors(p.string()); });
  };
  EXPECT_NE(edit_header("\"F32\"", "\"X32\"").find("unsupported dtype 'X32'"), std::string::npos);
  EXPECT_NE(edit_header("{\"w\"", "[\"w\"").find("JSON"), std::string::npos);
  EXPECT_NE(edit_header("[16,16]", "[16,17]").find("data_offsets"), std::string::npos);

  // Hand-written headers with no data: sizes whose byte count wraps round 64 bits, or that are
  // not whole numbers, are refused naming the file (issue 14, case 4).
  const auto header_only = [&](const std::string& shape, const std::string& offsets) {
    const std::string h = "{\"w\":{\"dtype\":\"F32\",\"shape\":" + shape + ",\"data_offsets\":" + offsets + "}}";
    std::string b(8, '\0');
    for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((h.size() >> (8 * i)) & 0xFF);
    const auto p = dir / "header-only.safetensors";
    write_bytes(p, b + h);
    return error_of([&] { cspn::read_safetensors(p.string()); });
  };
  for (const auto& [shape, offsets, expected] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"[4294967296,4294967296,16]", "[0,0]", "too large for any file"},
           {"[4294967296,4294967296]", "[0,0]", "too large for any file"},
           {"[1e30]", "[0,0]", "whole numbers"},
           {"[-1]", "[0,0]", "whole numbers"},
           {"[4]", "[0,-16]", "whole numbers"}}) {
    const auto msg = header_only(shape, offsets);
    EXPECT_NE(msg.find(expected), std::string::npos) << shape << ": " << msg;
    EXPECT_NE(msg.find("header-only.safetensors"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
  }

  const auto junk = dir / "junk.bin";
  write_bytes(junk, "hello world, not weights");
  EXPECT_NE(error_of([&] { cspn::read_weights(junk.string()); }).find("neither"), std::string::npos);
  EXPECT_THROW(cspn::read_weights((dir / "absent.pth").string()), std::runtime_error);
  EXPECT_THROW(cspn::write_safetensors((dir / "x.safetensors").string(),
                                       {{"c", torch::zeros({2}, torch::kComplexFloat)}}),
               std::invalid_argument);
}
