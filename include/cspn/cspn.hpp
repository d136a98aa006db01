#pragma once
// The public C++ API of CSPN: load a model file, decode photos (from files or from bytes in
// memory), find the garments in them with their named landmarks, and write the answer as JSON.
// Programs built on the library (the cspn command, the example) include this header alone; the
// layers inside the library never do. commands/commands.hpp has one call per cspn command.
//
//   const cspn::ModelFile model = cspn::load_model_file("model.cspn");
//   cspn::Pipeline pipeline(model, torch::kCPU);
//   const cv::Mat photo = cspn::read_image("photo.jpg");
//   for (const cspn::GarmentPrediction& g : pipeline.predict({photo}).front())
//     std::cout << cspn::garment_json(g, pipeline.schema()).dump(2) << "\n";
#include "cspn/api/image.hpp"
#include "cspn/api/json.hpp"
#include "cspn/api/pipeline.hpp"
#include "cspn/commands/commands.hpp"
