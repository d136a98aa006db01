// The C++ API in a few lines: load a model file that holds both halves, find the garments in one
// photo and print each one's landmarks. Usage: cspn_detect_example MODEL.cspn PHOTO [cpu|cuda]
#include <iostream>
#include <vector>

#include "cspn/cspn.hpp"

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    std::cerr << "usage: " << argv[0] << " MODEL.cspn PHOTO [cpu|cuda]\n";
    return 2;
  }
  try {
    const cspn::ModelFile model = cspn::load_model_file(argv[1]);
    cspn::Pipeline pipeline(model, torch::Device(argc == 4 ? argv[3] : "cpu"));
    const cv::Mat photo = cspn::read_image(argv[2]);  // errors name the file and what is wrong
    const auto& schema = pipeline.schema();
    const std::vector<std::vector<cspn::GarmentPrediction>> per_image = pipeline.predict({photo});
    for (const cspn::GarmentPrediction& garment : per_image.front()) {
      const cspn::Category& category = schema.categories[garment.category];
      std::cout << category.name << " score " << garment.score << " box " << garment.box.x1 << ' ' << garment.box.y1
                << ' ' << garment.box.x2 << ' ' << garment.box.y2 << '\n';
      for (int slot : category.landmarks) {
        const cspn::LandmarkPoint& point = garment.landmarks[slot];
        std::cout << "  " << schema.landmarks[slot] << ' ' << point.x << ' ' << point.y
                  << (point.visible ? "" : " (not visible)") << '\n';
      }
    }
  } catch (const std::exception& e) {
    std::cerr << e.what() << '\n';
    return 1;
  }
  return 0;
}
