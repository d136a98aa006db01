#pragma once
// `cspn predict`: the whole pipeline over image files, as COCO-results-style JSON and, on request,
// rendered copies of the images. A file that cannot be read as an image is reported in the output
// and the others go on.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include "cspn/engine/detection.hpp"

namespace cspn {

// Image files named by `inputs`: files as given (whatever their extension, and missing ones too, so
// that a wrong name is reported rather than ignored), folders searched recursively for image
// extensions, sorted.
std::vector<std::string> image_files(const std::vector<std::string>& inputs);

struct PredictOptions {
  std::string out_dir;      // rendered images go here ("" = none)
  std::string device = "cpu";
  int chunk = 8;            // images decoded and run together
  bool progress = true;
};

// {"images": [{id, file_name, width, height}], "categories": [...], "annotations": [{image_id,
// category_id, category, bbox [x,y,w,h], score, keypoints [x,y,v]*K, landmarks {name: {x, y, score,
// visible}}}], "errors": [{file, error}]}.
nlohmann::json predict_files(Pipeline& pipeline, const std::vector<std::string>& files, const PredictOptions& opt);

// Draws boxes, category and score, and the category's landmarks (filled: visible, ring: not) with
// their names onto `bgr`.
void render_garments(cv::Mat& bgr, const std::vector<GarmentPrediction>& garments, const LandmarkSchema& schema);

}  // namespace cspn
