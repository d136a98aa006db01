// data.unlabelled: a folder of photos that nobody labelled.
#include <filesystem>

#include "cspn/data/image.hpp"
#include "cspn/data/readers.hpp"

namespace cspn {

Dataset read_unlabelled(const std::string& dir, const LandmarkSchema& schema) {
  std::error_code error;
  if (!std::filesystem::is_directory(dir, error))
    throw DataError(dir + ": not a folder (data.unlabelled / --unlabelled names a folder of photos)");
  Dataset data{schema, {}, {}};
  for (const auto& path : image_files({dir})) {
    try {
      const auto [width, height] = image_size(path);
      check_complete(path);
      data.samples.push_back({path, width, height, "unlabelled", {}, path});
    } catch (const DataError& e) {
      data.skipped.push_back(e.what());
    }
  }
  if (data.samples.empty())
    throw DataError(dir + ": no readable image (.jpg .jpeg .png .bmp .webp .tif .tiff) in the folder or below it" +
                    (data.skipped.empty() ? std::string() : "; " + std::to_string(data.skipped.size()) + " unreadable"));
  return data;
}

}  // namespace cspn
