#pragma once
// `cspn demo`: the main job on a built-in default, from synthetic scenes to a report page.
#include <string>

namespace cspn {

struct DemoOptions {
  std::string out_dir = "cspn-demo";  // scenes/, run-N/ and report-N/ go here
  double minutes = 8;                 // training time budget, both halves (40% landmarks, 60% detector)
  int count = 600;                    // synthetic scenes (80% train, 10% val, 10% test)
  std::string photos = "../shared/data/ziegler_robot_landmarks";  // run on these too, when present
};

struct DemoResult {
  std::string page;   // report-N/index.html
  std::string model;  // run-N/model.cspn
};

// The main job on the built-in default: synthesize scenes, train both halves within the time budget,
// evaluate on the held-out scenes, run the pipeline on them (and on `photos`), and write a report
// page with the rendered predictions, the tables and the loss curves.
DemoResult run_demo(const DemoOptions& opt);

}  // namespace cspn
