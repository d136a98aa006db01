// Tests apps/cspn/main.cpp in the FashionAI and DeepFashion2 schemas: training, evaluating and
// predicting end to end through the `cspn` command. No real data set of those schemas fits in the
// tests, so synthetic garments (DeepFashion's 8 landmarks) are written into each format with their
// landmarks placed on slots of the target schema (left/right pairs onto its flip pairs): the model
// must learn them there.
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cspn/data/readers.hpp"
#include "common.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace cspn;

namespace {

// Per DeepFashion category: the target category and, per DeepFashion slot, the target slot.
using Mapping = std::map<std::string, std::pair<std::string, std::map<std::string, std::string>>>;

struct Converted {
  fs::path data;
  int garments = 0;
};

Dataset synthetic(const fs::path& dir) {
  const auto code = test::run_process({std::string(test::kBinaryDir) + "/cspn", "synth", "--out", (dir / "synth").string(),
                                       "--count", "256", "--seed", "4", "--width", "160", "--height", "160"},
                                      (dir / "synth.out").string(), (dir / "synth.err").string());
  EXPECT_EQ(code, 0) << test::file_bytes(dir / "synth.err");
  return read_fld((dir / "synth").string());
}

// Visible 1, occluded 0, absent -1 (FashionAI); DeepFashion2: 2, 1, 0.
int fashionai_v(Visibility v) { return v == Visibility::Visible ? 1 : v == Visibility::Occluded ? 0 : -1; }

Converted to_fashionai(const Dataset& src, const fs::path& dir, const Mapping& mapping) {
  const LandmarkSchema target = LandmarkSchema::load("fashionai");
  fs::create_directories(dir / "Images");
  std::ofstream csv(dir / "train.csv");
  csv << "image_id,image_category";
  for (const auto& n : target.landmarks) csv << "," << n;
  csv << "\n";
  Converted out{dir / "train.csv"};
  for (const Sample& s : src.samples) {
    const Garment& g = s.garments.at(0);
    const auto& [category, slots] = mapping.at(src.schema.categories[g.category].name);
    std::vector<std::string> cells(target.num_landmarks(), "-1_-1_-1");
    for (const auto& [from, to] : slots) {
      const Keypoint& p = g.keypoints[src.schema.landmark_index(from)];
      if (p.v == Visibility::Absent) continue;
      cells[target.landmark_index(to)] = std::to_string(static_cast<int>(p.x)) + "_" +
                                         std::to_string(static_cast<int>(p.y)) + "_" + std::to_string(fashionai_v(p.v));
    }
    const std::string name = fs::path(s.image).filename().string();
    fs::create_symlink(s.image, dir / "Images" / name);
    csv << "Images/" << name << "," << category;
    for (const auto& c : cells) csv << "," << c;
    csv << "\n";
    ++out.garments;
  }
  return out;
}

Converted to_deepfashion2(const Dataset& src, const fs::path& dir, const Mapping& mapping) {
  const LandmarkSchema target = LandmarkSchema::load("deepfashion2");
  fs::create_directories(dir / "image");
  fs::create_directories(dir / "annos");
  Converted out{dir};
  int n = 0;
  for (const Sample& s : src.samples) {
    const Garment& g = s.garments.at(0);
    const auto& [category, slots] = mapping.at(src.schema.categories[g.category].name);
    const Category& cat = target.categories[target.category_index(category)];
    json landmarks = json::array();
    for (int slot : cat.landmarks) {
      double x = 0, y = 0, v = 0;
      for (const auto& [from, to] : slots)
        if (target.landmark_index(to) == slot) {
          const Keypoint& p = g.keypoints[src.schema.landmark_index(from)];
          if (p.v != Visibility::Absent) x = static_cast<int>(p.x), y = static_cast<int>(p.y), v = p.v == Visibility::Visible ? 2 : 1;
        }
      landmarks.insert(landmarks.end(), {x, y, v});
    }
    char stem[16];
    std::snprintf(stem, sizeof stem, "%06d", ++n);
    fs::create_symlink(s.image, dir / "image" / (std::string(stem) + ".jpg"));
    const json item{{"category_id", cat.id},
                    {"bounding_box", {g.box.x1, g.box.y1, g.box.x2, g.box.y2}},
                    {"landmarks", landmarks}};
    std::ofstream(dir / "annos" / (std::string(stem) + ".json")) << json{{"source", "shop"}, {"item1", item}}.dump();
    ++out.garments;
  }
  return out;
}

double first_and_last_loss(const fs::path& log, double& last) {
  std::ifstream in(log);
  double first = -1;
  for (std::string line; std::getline(in, line);) {
    const json r = json::parse(line);
    if (r.value("phase", "") != "keypoints" || !r.contains("iter") || !r.contains("loss")) continue;
    if (first < 0) first = r["loss"].get<double>();
    last = r["loss"].get<double>();
  }
  return first;
}

// Trains a both-halves model in `schema` on the converted data, then checks that it learned (loss
// falls; held-out NE below the mean shape's) and that eval and predict speak the schema.
void train_and_check(const std::string& schema, const std::string& format, const Converted& data, const fs::path& dir,
                     const std::string& category) {
  const std::string cspn = std::string(test::kBinaryDir) + "/cspn";
  const std::string config = (fs::path(test::kSourceDir) / "tests/fixtures/tiny_pipeline.yaml").string();
  const std::vector<std::string> sets{"--set", "data.schema=" + schema, "--set", "data.holdout=0.25"};
  std::vector<std::string> train{cspn, "train", "--config", config, "--data", data.data.string(), "--format", format,
                                 "--out", (dir / "run").string(), "--quiet"};
  // About 480 Adam steps on the crops as they are, in few epochs (each ends with a checkpoint):
  // enough to leave the mean shape behind.
  for (const char* set : {"train.epochs=20", "train.optimizer=adam", "train.lr=0.002", "data.rotate_aug=0",
                          "data.scale_aug=0", "data.shift_aug=0", "data.occlusion_aug=0"})
    train.insert(train.end(), {"--set", set});
  train.insert(train.end(), sets.begin(), sets.end());
  ASSERT_EQ(test::run_process(train, (dir / "train.out").string(), (dir / "train.err").string()), 0)
      << test::file_bytes(dir / "train.err");
  double last = 0;
  const double first = first_and_last_loss(dir / "run" / "log.jsonl", last);
  EXPECT_LT(last, 0.7 * first) << "landmark loss " << first << " -> " << last;

  const std::string model = (dir / "run" / "model.cspn").string();
  ASSERT_EQ(test::run_process({cspn, "eval", "--model", model, "--data", data.data.string(), "--format", format, "--split",
                               "test", "--json", (dir / "eval.json").string(), "--quiet"},
                              (dir / "eval.out").string(), (dir / "eval.err").string()),
            0)
      << test::file_bytes(dir / "eval.err");
  std::vector<std::string> baseline{cspn, "eval", "--baseline", "mean-shape", "--train-data", data.data.string(), "--data",
                                    data.data.string(), "--format", format, "--split", "test", "--json",
                                    (dir / "mean.json").string(), "--quiet"};
  baseline.insert(baseline.end(), sets.begin(), sets.end());
  ASSERT_EQ(test::run_process(baseline, (dir / "mean.out").string(), (dir / "mean.err").string()), 0)
      << test::file_bytes(dir / "mean.err");
  const json eval = json::parse(test::file_bytes(dir / "eval.json"));
  const json mean = json::parse(test::file_bytes(dir / "mean.json"));
  EXPECT_EQ(eval["schema"], schema);
  EXPECT_LT(eval["ne_image"]["avg"].get<double>(), mean["ne_image"]["avg"].get<double>());
  EXPECT_TRUE(eval["ne_image"]["per_category"].contains(category));
  EXPECT_NE(test::file_bytes(dir / "eval.out").find("auc"), std::string::npos) << "the eval table";

  // predict: landmarks under the schema's names.
  const Dataset read = read_dataset(data.data.string(), format, [&] {
    ReadOptions o;
    o.schema = LandmarkSchema::load(schema);
    return o;
  }());
  ASSERT_EQ(test::run_process({cspn, "predict", "--model", model, "--json", (dir / "predict.json").string(), "--quiet",
                               read.samples.front().image},
                              (dir / "predict.out").string(), (dir / "predict.err").string()),
            0)
      << test::file_bytes(dir / "predict.err");
  const json predicted = json::parse(test::file_bytes(dir / "predict.json"));
  const std::string text = predicted.dump();
  const LandmarkSchema s = LandmarkSchema::load(schema);
  bool named = false;
  for (const auto& name : s.landmarks) named = named || text.find("\"" + name + "\"") != std::string::npos;
  EXPECT_TRUE(named) << text.substr(0, 400);
  EXPECT_EQ(text.find("left_collar"), std::string::npos) << "no DeepFashion names";
}

TEST(SchemaTraining, FashionAI) {
  const fs::path dir = test::scratch_dir("schema_fashionai");
  const Dataset src = synthetic(dir);
  const Mapping mapping{
      {"upper", {"blouse", {{"left_collar", "neckline_left"}, {"right_collar", "neckline_right"},
                            {"left_sleeve", "cuff_left_out"}, {"right_sleeve", "cuff_right_out"},
                            {"left_hem", "top_hem_left"}, {"right_hem", "top_hem_right"}}}},
      {"lower", {"skirt", {{"left_waistline", "waistband_left"}, {"right_waistline", "waistband_right"},
                           {"left_hem", "hemline_left"}, {"right_hem", "hemline_right"}}}},
      {"full", {"dress", {{"left_collar", "neckline_left"}, {"right_collar", "neckline_right"},
                          {"left_sleeve", "cuff_left_out"}, {"right_sleeve", "cuff_right_out"},
                          {"left_waistline", "waistline_left"}, {"right_waistline", "waistline_right"},
                          {"left_hem", "hemline_left"}, {"right_hem", "hemline_right"}}}}};
  const Converted data = to_fashionai(src, dir / "fashionai", mapping);
  ASSERT_EQ(data.garments, 256);
  train_and_check("fashionai", "fashionai", data, dir, "skirt");
}

TEST(SchemaTraining, DeepFashion2) {
  const fs::path dir = test::scratch_dir("schema_deepfashion2");
  const Dataset src = synthetic(dir);
  // Left/right pairs onto flip pairs of the category (checked by the schema test): collar onto
  // the neckline's 2/6, sleeves onto the shoulders (the NE pair), hems and waist onto further pairs.
  const Mapping mapping{
      {"upper", {"short_sleeved_shirt", {{"left_collar", "short_sleeved_shirt_2"}, {"right_collar", "short_sleeved_shirt_6"},
                                         {"left_sleeve", "short_sleeved_shirt_7"}, {"right_sleeve", "short_sleeved_shirt_25"},
                                         {"left_hem", "short_sleeved_shirt_14"}, {"right_hem", "short_sleeved_shirt_18"}}}},
      {"lower", {"skirt", {{"left_waistline", "skirt_1"}, {"right_waistline", "skirt_3"},
                           {"left_hem", "skirt_4"}, {"right_hem", "skirt_8"}}}},
      {"full", {"long_sleeved_dress", {{"left_collar", "long_sleeved_dress_2"}, {"right_collar", "long_sleeved_dress_6"},
                                       {"left_sleeve", "long_sleeved_dress_7"}, {"right_sleeve", "long_sleeved_dress_37"},
                                       {"left_waistline", "long_sleeved_dress_12"}, {"right_waistline", "long_sleeved_dress_32"},
                                       {"left_hem", "long_sleeved_dress_21"}, {"right_hem", "long_sleeved_dress_23"}}}}};
  const LandmarkSchema df2 = LandmarkSchema::load("deepfashion2");
  for (const auto& [df, target] : mapping)
    for (const auto& [from, to] : target.second) {
      const std::string partner = LandmarkSchema::deepfashion().landmarks[LandmarkSchema::deepfashion().flip[
          LandmarkSchema::deepfashion().landmark_index(from)]];
      ASSERT_EQ(df2.landmarks[df2.flip[df2.landmark_index(to)]], target.second.at(partner)) << to;
    }
  const Converted data = to_deepfashion2(src, dir / "train", mapping);
  ASSERT_EQ(data.garments, 256);
  train_and_check("deepfashion2", "deepfashion2", data, dir, "skirt");
}

}  // namespace
