// Weight files: safetensors round trips and byte layout, hand-made PyTorch zip checkpoints,
// corrupt files, LoadReport, model files.
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common.hpp"
#include "cspn/io/model_file.hpp"
#include "cspn/io/weights.hpp"

namespace fs = std::filesystem;

namespace {

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}

template <class E = std::runtime_error>
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "no exception";
  return {};
}

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

TEST(LoadStateDict, ReportsMissingUnexpectedAndMismatched) {
  torch::nn::Sequential module(torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 3, 1)), torch::nn::BatchNorm2d(3));
  std::vector<std::string> names;
  for (const auto& kv : cspn::state_dict(*module)) names.push_back(kv.first);
  // PyTorch's state_dict order: per module, parameters then buffers.
  EXPECT_EQ(names, (std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                                             "1.running_var", "1.num_batches_tracked"}));

  const auto w = torch::randn({3, 2, 1, 1}, torch::kFloat64);  // converted to float on load
  const cspn::StateDict file{{"0.weight", w},
                             {"0.bias", torch::zeros({4})},
                             {"1.bias", torch::full({3}, 0.5)},
                             {"1.running_mean", torch::ones({3})},
                             {"1.running_var", torch::full({3}, 2.0)},
                             {"1.num_batches_tracked", torch::tensor(int64_t{42})},
                             {"extra.key", torch::zeros({1})}};
  const auto report = cspn::load_state_dict(*module, file);
  EXPECT_FALSE(report.ok());
  EXPECT_EQ(report.loaded, 5u);
  EXPECT_EQ(report.missing, std::vector<std::string>{"1.weight"});
  EXPECT_EQ(report.unexpected, std::vector<std::string>{"extra.key"});
  EXPECT_EQ(report.mismatched, std::vector<std::string>{"0.bias: file [4] vs module [3]"});
  EXPECT_NE(report.summary().find("missing: 1.weight"), std::string::npos) << report.summary();
  const auto now = cspn::state_dict(*module);
  EXPECT_TRUE(torch::allclose(now[0].second, w.to(torch::kFloat32)));
  EXPECT_EQ(now[0].second.scalar_type(), torch::kFloat32);
  EXPECT_EQ(now[6].second.item<int64_t>(), 42);

  // Prefix stripping (keys without it are another part's) and skipped keys.
  cspn::StateDict prefixed;
  for (const auto& [k, t] : file)
    if (k != "0.bias") prefixed.emplace_back("net." + k, t);
  prefixed.emplace_back("other.weight", torch::zeros({9}));
  const auto ok = cspn::load_state_dict(*module, prefixed, "net.", {"0.bias", "1.weight", "extra."});
  EXPECT_TRUE(ok.ok()) << ok.summary();
  EXPECT_EQ(ok.loaded, 5u);
}

TEST(ModelFile, RoundTripsConfigSchemaExtraAndTensors) {
  const auto dir = cspn::test::scratch_dir("model_file");
  cspn::ModelFile model;
  model.config.model.keypoints.stages = 2;
  model.config.train.lr = 0.0125f;
  model.schema = cspn::LandmarkSchema::deepfashion();
  model.extra = {{"epochs", 3}, {"ne", 0.061}};
  model.tensors = {{"keypoints.w", torch::randn({3, 3})}, {"detector.b", torch::arange(5)}};
  const auto path = (dir / "m.cspn").string();
  cspn::save_model_file(path, model);

  const auto back = cspn::load_model_file(path);
  EXPECT_EQ(back.config.to_json(), model.config.to_json());
  EXPECT_EQ(back.config.model.keypoints.stages, 2);
  EXPECT_EQ(back.schema.to_json(), model.schema.to_json());
  EXPECT_EQ(back.extra, model.extra);
  ASSERT_EQ(back.tensors.size(), 2u);
  EXPECT_EQ(back.tensors[1].first, "detector.b");
  EXPECT_TRUE(torch::equal(back.tensors[0].second, model.tensors[0].second));
}

TEST(ModelFile, FormatTwoKeepsItsStrideFourCascade) {
  // Format 2 files were written before model.keypoints.refine_stride: their configs lack the key and
  // their later stages answer at stride 4, whatever today's default.
  const auto dir = cspn::test::scratch_dir("model_file_format2");
  cspn::ModelFile model;
  model.schema = cspn::LandmarkSchema::deepfashion();
  model.config.model.keypoints.refine_stride = 2;
  const auto path = (dir / "m.cspn").string();
  cspn::save_model_file(path, model);
  std::map<std::string, std::string> meta;
  const auto tensors = cspn::read_safetensors(path, &meta);
  auto config = nlohmann::json::parse(meta.at("cspn.config"));
  ASSERT_EQ(config["model"]["keypoints"]["refine_stride"], 2);
  config["model"]["keypoints"].erase("refine_stride");
  meta["cspn.config"] = config.dump();
  const auto old = (dir / "old.cspn").string();
  for (const auto& [format, stride] : {std::pair<const char*, int>{"2", 4}, {"3", cspn::KeypointModelConfig{}.refine_stride}}) {
    meta["cspn.format"] = format;
    cspn::write_safetensors(old, tensors, meta);
    EXPECT_EQ(cspn::load_model_file(old).config.model.keypoints.refine_stride, stride) << "format " << format;
  }
}

TEST(ModelFile, RejectsPlainWeightsNewerFormatsAndBadMetadata) {
  const auto dir = cspn::test::scratch_dir("model_file_bad");
  const auto plain = (dir / "plain.safetensors").string();
  cspn::write_safetensors(plain, {{"w", torch::zeros({1})}});
  auto msg = error_of([&] { cspn::load_model_file(plain); });
  EXPECT_NE(msg.find("not a CSPN model file"), std::string::npos) << msg;
  EXPECT_NE(msg.find(plain), std::string::npos) << msg;

  cspn::ModelFile model;
  model.schema = cspn::LandmarkSchema::deepfashion();
  const auto good = (dir / "good.cspn").string();
  cspn::save_model_file(good, model);
  std::map<std::string, std::string> meta;
  const auto tensors = cspn::read_safetensors(good, &meta);

  auto with = [&](const std::string& key, const std::string& value) {
    auto m = meta;
    m[key] = value;
    const auto p = (dir / "edited.cspn").string();
    cspn::write_safetensors(p, tensors, m);
    return error_of([&] { cspn::load_model_file(p); });
  };
  EXPECT_NE(with("cspn.format", "4").find("format 4"), std::string::npos);
  // Format 1 predates the cascade redesign: its landmark network is refused, saying why.
  msg = with("cspn.format", "1");
  EXPECT_NE(msg.find("old cascade layout"), std::string::npos) << msg;
  EXPECT_NE(msg.find("retrain"), std::string::npos) << msg;
  EXPECT_NE(with("cspn.format", "one").find("not a version number"), std::string::npos);
  EXPECT_NE(with("cspn.config", "{broken").find("cspn.config"), std::string::npos);
  // A stored config past the bounds is refused before any network is built (issue 14, case 3).
  auto config = nlohmann::json::parse(meta.at("cspn.config"));
  config["model"]["keypoints"]["channels"] = 2000000000;
  msg = with("cspn.config", config.dump());
  EXPECT_NE(msg.find("model.keypoints.channels"), std::string::npos) << msg;
  config["model"]["keypoints"]["channels"] = 64;
  config["model"]["keypoints"]["input_size"] = {100000, 100000};
  msg = with("cspn.config", config.dump());
  EXPECT_NE(msg.find("model.keypoints.input_size"), std::string::npos) << msg;
  EXPECT_NE(with("cspn.schema", "{\"landmarks\": 3}").find("cspn.schema"), std::string::npos);
}
