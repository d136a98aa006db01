#pragma once
// Predictions as JSON, in the keys that `cspn predict`, `cspn serve` and the Python module share.
#include <nlohmann/json.hpp>

#include "cspn/api/pipeline.hpp"
#include "cspn/core/schema.hpp"

namespace cspn {

// One garment as JSON: {category_id (1-based), category, bbox [x, y, w, h], score, keypoints
// [x, y, v] per schema slot (COCO v: 2 visible, 1 below test.visible_score, 0 not in the
// category), landmarks {name: {x, y, score, visible}} for the category's landmarks}.
nlohmann::json garment_json(const GarmentPrediction& garment, const LandmarkSchema& schema);
// The inverse of garment_json (category from category_id, box from bbox, each slot from keypoints,
// scores from landmarks); throws std::invalid_argument naming the key that is missing or malformed.
GarmentPrediction garment_from_json(const nlohmann::json& garment, const LandmarkSchema& schema);
// The schema's categories: [{id, name, landmarks [names]}].
nlohmann::json categories_json(const LandmarkSchema& schema);

}  // namespace cspn
