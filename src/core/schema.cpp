#include "cspn/core/schema.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include "schema_files.hpp"
#include "yaml_text.hpp"

namespace cspn {
namespace {

std::string join(const std::vector<std::string>& items) {
  std::ostringstream out;
  for (size_t i = 0; i < items.size(); ++i) out << (i ? ", " : "") << items[i];
  return out.str();
}

}  // namespace

int LandmarkSchema::category_index(const std::string& name) const {
  std::vector<std::string> known;
  for (size_t i = 0; i < categories.size(); ++i) {
    if (categories[i].name == name) return static_cast<int>(i);
    known.push_back(categories[i].name);
  }
  throw std::invalid_argument("unknown category '" + name + "' (schema " + this->name + " has: " +
                              join(known) + ")");
}

int LandmarkSchema::landmark_index(const std::string& name) const {
  for (size_t i = 0; i < landmarks.size(); ++i)
    if (landmarks[i] == name) return static_cast<int>(i);
  throw std::invalid_argument("unknown landmark '" + name + "' (schema " + this->name + " has: " +
                              join(landmarks) + ")");
}

int LandmarkSchema::category_with_id(int id) const {
  for (size_t i = 0; i < categories.size(); ++i)
    if (categories[i].id == id) return static_cast<int>(i);
  return -1;
}

torch::Tensor LandmarkSchema::category_mask(const torch::Tensor& cats) const {
  TORCH_CHECK(cats.dim() == 1, "category_mask: categories should be [N], got ", cats.sizes());
  auto table = torch::zeros({num_categories(), num_landmarks()});
  for (int c = 0; c < num_categories(); ++c)
    for (int k : categories[c].landmarks) table[c][k] = 1.0f;
  return table.to(cats.device()).index_select(0, cats.to(torch::kLong));
}

nlohmann::json LandmarkSchema::to_json() const {
  nlohmann::json cats = nlohmann::json::array();
  for (const auto& c : categories)
    cats.push_back({{"name", c.name}, {"landmarks", c.landmarks}, {"norm_pair", c.norm_pair}, {"id", c.id}});
  return {{"name", name}, {"landmarks", landmarks}, {"labels", labels}, {"flip", flip}, {"categories", cats}};
}

LandmarkSchema LandmarkSchema::from_json(const nlohmann::json& j) {
  LandmarkSchema s;
  try {
    s.name = j.at("name").get<std::string>();
    s.landmarks = j.at("landmarks").get<std::vector<std::string>>();
    s.flip = j.at("flip").get<std::vector<int>>();
    s.labels = j.contains("labels") ? j["labels"].get<std::vector<std::string>>() : s.landmarks;
    for (const auto& c : j.at("categories"))
      s.categories.push_back({c.at("name").get<std::string>(), c.at("landmarks").get<std::vector<int>>(),
                              c.at("norm_pair").get<std::array<int, 2>>(), c.value("id", 0)});
    // Model files written before schemas were files have no labels and no category ids: a built-in
    // schema of the same name and slots supplies them.
    const bool old = !j.contains("labels") || std::any_of(j.at("categories").begin(), j.at("categories").end(),
                                                          [](const nlohmann::json& c) { return !c.contains("id"); });
    const auto names = builtin_names();
    if (old && std::find(names.begin(), names.end(), s.name) != names.end()) {
      const LandmarkSchema current = load(s.name);
      if (current.landmarks == s.landmarks) {
        if (!j.contains("labels")) s.labels = current.labels;
        for (auto& c : s.categories)
          for (const auto& d : current.categories)
            if (c.id == 0 && c.name == d.name) c.id = d.id;
      }
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("landmark schema: ") + e.what());
  }
  const int k = s.num_landmarks();
  auto check_slot = [&](int slot, const std::string& what) {
    if (slot < 0 || slot >= k)
      throw std::invalid_argument("landmark schema " + s.name + ": " + what + " refers to slot " +
                                  std::to_string(slot) + ", schema has " + std::to_string(k));
  };
  if (s.name.empty()) throw std::invalid_argument("landmark schema: empty name");
  if (k == 0) throw std::invalid_argument("landmark schema " + s.name + ": no landmarks");
  if (s.categories.empty()) throw std::invalid_argument("landmark schema " + s.name + ": no categories");
  if (static_cast<int>(s.labels.size()) != k)
    throw std::invalid_argument("landmark schema " + s.name + ": labels has " + std::to_string(s.labels.size()) +
                                " entries, expected " + std::to_string(k));
  if (static_cast<int>(s.flip.size()) != k)
    throw std::invalid_argument("landmark schema " + s.name + ": flip has " + std::to_string(s.flip.size()) +
                                " entries, expected " + std::to_string(k));
  for (int i = 0; i < k; ++i) {
    check_slot(s.flip[i], "flip[" + std::to_string(i) + "]");
    if (s.flip[s.flip[i]] != i)
      throw std::invalid_argument("landmark schema " + s.name + ": flip is not symmetric at " + s.landmarks[i]);
  }
  std::set<std::string> names;
  for (const auto& c : s.categories) {
    if (!names.insert(c.name).second)
      throw std::invalid_argument("landmark schema " + s.name + ": category " + c.name + " is listed twice");
    if (c.landmarks.empty()) throw std::invalid_argument("landmark schema " + s.name + ": category " + c.name + " has no landmarks");
    for (int slot : c.landmarks) check_slot(slot, "category " + c.name);
    for (int slot : c.norm_pair) check_slot(slot, "category " + c.name + " norm_pair");
  }
  return s;
}

namespace {

[[noreturn]] void yaml_fail(const std::string& source, const YAML::Node& node, const std::string& what) {
  const auto mark = node.Mark();
  throw std::invalid_argument(source + (mark.is_null() ? "" : ":" + std::to_string(mark.line + 1)) + ": " + what);
}

std::vector<std::string> name_list(const YAML::Node& node, const std::string& source, const std::string& key) {
  if (!node.IsSequence()) yaml_fail(source, node, key + ": expected a list of names");
  std::vector<std::string> out;
  for (const auto& item : node) {
    if (!item.IsScalar()) yaml_fail(source, item, key + ": expected a name, got a " + (item.IsMap() ? "map" : "list"));
    out.push_back(item.Scalar());
  }
  return out;
}

}  // namespace

LandmarkSchema LandmarkSchema::from_yaml(const std::string& text, const std::string& source) {
  YAML::Node root = parse_yaml(text, source);
  if (!root.IsMap()) yaml_fail(source, root, "expected a map with name, landmarks, flip_pairs and categories");
  for (const auto& entry : root) {
    const std::string key = entry.first.Scalar();
    if (key != "name" && key != "landmarks" && key != "labels" && key != "flip_pairs" && key != "categories")
      yaml_fail(source, entry.first, "unknown key '" + key + "' (expected name, landmarks, labels, flip_pairs, categories)");
  }
  const auto need = [&](const char* key) {
    if (!root[key]) yaml_fail(source, root, std::string("missing '") + key + "'");
    return root[key];
  };
  nlohmann::json j;
  const YAML::Node name = need("name");
  if (!name.IsScalar() || name.Scalar().empty()) yaml_fail(source, name, "name: expected a name");
  j["name"] = name.Scalar();

  const YAML::Node cats = need("categories");
  if (!cats.IsSequence() || cats.size() == 0) yaml_fail(source, cats, "categories: expected a list of categories");
  std::vector<std::string> slots;
  if (root["landmarks"]) {
    slots = name_list(root["landmarks"], source, "landmarks");
  } else {
    for (const auto& c : cats)
      if (c.IsMap() && c["landmarks"])
        for (const auto& n : name_list(c["landmarks"], source, "landmarks"))
          if (std::find(slots.begin(), slots.end(), n) == slots.end()) slots.push_back(n);
  }
  std::map<std::string, int> index;
  for (size_t i = 0; i < slots.size(); ++i)
    if (!index.emplace(slots[i], static_cast<int>(i)).second)
      yaml_fail(source, root["landmarks"], "landmarks: '" + slots[i] + "' is listed twice");
  const auto slot = [&](const YAML::Node& node, const std::string& n, const std::string& where) {
    const auto it = index.find(n);
    if (it == index.end()) yaml_fail(source, node, where + ": unknown landmark '" + n + "'");
    return it->second;
  };
  j["landmarks"] = slots;
  if (root["labels"]) {
    const auto labels = name_list(root["labels"], source, "labels");
    if (labels.size() != slots.size())
      yaml_fail(source, root["labels"], "labels: " + std::to_string(labels.size()) + " headings for " +
                                            std::to_string(slots.size()) + " landmarks");
    j["labels"] = labels;
  } else {
    j["labels"] = slots;
  }

  std::vector<int> flip(slots.size());
  for (size_t i = 0; i < flip.size(); ++i) flip[i] = static_cast<int>(i);
  if (root["flip_pairs"]) {
    const YAML::Node pairs = root["flip_pairs"];
    if (!pairs.IsSequence()) yaml_fail(source, pairs, "flip_pairs: expected a list of [left, right] pairs");
    std::set<int> paired;
    for (const auto& pair : pairs) {
      const auto names = name_list(pair, source, "flip_pairs");
      if (names.size() != 2) yaml_fail(source, pair, "flip_pairs: expected two names, got " + std::to_string(names.size()));
      const int a = slot(pair, names[0], "flip_pairs"), b = slot(pair, names[1], "flip_pairs");
      if (a == b || !paired.insert(a).second || !paired.insert(b).second)
        yaml_fail(source, pair, "flip_pairs: " + names[0] + " and " + names[1] + " must be two slots in no other pair");
      flip[a] = b;
      flip[b] = a;
    }
  }
  j["flip"] = flip;

  j["categories"] = nlohmann::json::array();
  for (const auto& c : cats) {
    if (!c.IsMap()) yaml_fail(source, c, "categories: expected a map with name, landmarks and norm");
    for (const auto& entry : c) {
      const std::string key = entry.first.Scalar();
      if (key != "name" && key != "id" && key != "landmarks" && key != "norm")
        yaml_fail(source, entry.first, "category: unknown key '" + key + "' (expected name, id, landmarks, norm)");
    }
    for (const char* key : {"name", "landmarks", "norm"})
      if (!c[key]) yaml_fail(source, c, std::string("category: missing '") + key + "'");
    const std::string cname = c["name"].Scalar();
    nlohmann::json cat{{"name", cname}, {"landmarks", nlohmann::json::array()}};
    for (const auto& n : name_list(c["landmarks"], source, "category " + cname + " landmarks"))
      cat["landmarks"].push_back(slot(c["landmarks"], n, "category " + cname));
    const auto norm = name_list(c["norm"], source, "category " + cname + " norm");
    if (norm.size() != 2) yaml_fail(source, c["norm"], "category " + cname + " norm: expected two landmarks");
    cat["norm_pair"] = {slot(c["norm"], norm[0], "category " + cname + " norm"),
                        slot(c["norm"], norm[1], "category " + cname + " norm")};
    int id = 0;
    if (c["id"]) {
      try {
        id = c["id"].as<int>();
      } catch (const YAML::Exception&) {
        yaml_fail(source, c["id"], "category " + cname + " id: expected a whole number");
      }
    }
    cat["id"] = id;
    j["categories"].push_back(cat);
  }
  try {
    return from_json(j);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(source + ": " + e.what());
  }
}

std::vector<std::string> LandmarkSchema::builtin_names() {
  std::vector<std::string> names;
  for (const auto& [name, text] : builtin_schema_files()) names.push_back(name);
  return names;
}

LandmarkSchema LandmarkSchema::load(const std::string& name_or_path) {
  for (const auto& [name, text] : builtin_schema_files())
    if (name == name_or_path) return from_yaml(text, "schemas/" + name + ".yaml");
  const std::filesystem::path path(name_or_path);
  if (path.extension() != ".yaml" && path.extension() != ".yml")
    throw std::invalid_argument("unknown landmark schema '" + name_or_path + "' (built in: " + join(builtin_names()) +
                                "; or the path of a .yaml file)");
  std::ifstream in(path);
  if (!in) throw std::invalid_argument(name_or_path + ": cannot open the schema file");
  std::ostringstream text;
  text << in.rdbuf();
  return from_yaml(text.str(), name_or_path);
}

const LandmarkSchema& LandmarkSchema::deepfashion() {
  static const LandmarkSchema schema = load("deepfashion");
  return schema;
}

}  // namespace cspn
