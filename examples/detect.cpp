// The C++ API in a few lines: load a model file that holds both halves, find the garments in one
// photo and print each one's landmarks.
// Usage: cspn_detect_example MODEL.cspn PHOTO [cpu|cuda] [--repeat N]
// --repeat N also times N more predict calls on the photo and prints their median in ms (the
// Python overhead benchmark, bench/python_overhead.py, compares against it).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "cspn/cspn.hpp"

int main(int argc, char** argv) {
  int repeat = 0;
  if (argc >= 5 && std::strcmp(argv[argc - 2], "--repeat") == 0) {
    repeat = std::max(1, std::atoi(argv[argc - 1]));
    argc -= 2;
  }
  if (argc < 3 || argc > 4) {
    std::cerr << "usage: " << argv[0] << " MODEL.cspn PHOTO [cpu|cuda] [--repeat N]\n";
    return 2;
  }
  try {
    cspn::use_threads(0);  // every core this process may use, as the cspn command and Python do
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
    std::vector<double> ms;
    for (int i = 0; i < repeat; ++i) {
      const auto start = std::chrono::steady_clock::now();
      pipeline.predict({photo});
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
    if (repeat > 0) {
      std::nth_element(ms.begin(), ms.begin() + repeat / 2, ms.end());
      std::cout << "median predict ms: " << ms[repeat / 2] << '\n';
    }
  } catch (const std::exception& e) {
    std::cerr << e.what() << '\n';
    return 1;
  }
  return 0;
}
