// Reading, decoding and writing images with the header checks: every image the library takes in
// comes through here. And finding image files in folders.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <istream>
#include <set>

#include <opencv2/imgcodecs.hpp>

#include "cspn/core/io/atomic_file.hpp"
#include "cspn/data/image.hpp"

namespace cspn {

namespace {

// A read-only, seekable stream over bytes held elsewhere (the header checks seek within it).
class ByteStream : public std::streambuf {
 public:
  ByteStream(const char* data, size_t size) {
    char* p = const_cast<char*>(data);
    setg(p, p, p + size);
  }

 protected:
  pos_type seekoff(off_type off, std::ios_base::seekdir dir, std::ios_base::openmode) override {
    const off_type base = dir == std::ios_base::beg ? 0 : dir == std::ios_base::cur ? gptr() - eback() : egptr() - eback();
    return seekpos(pos_type(base + off), std::ios_base::in);
  }
  pos_type seekpos(pos_type pos, std::ios_base::openmode) override {
    if (pos < 0 || pos > egptr() - eback()) return pos_type(off_type(-1));
    setg(eback(), eback() + static_cast<off_type>(pos), egptr());
    return pos;
  }
};

void check_pixels(std::pair<int, int> size, const std::string& name, long max_pixels) {
  const auto [w, h] = size;
  if (static_cast<long>(w) * h > max_pixels)
    throw ImageError(ImageError::Kind::TooLarge, name + ": image is " + std::to_string(w) + "x" + std::to_string(h) +
                                                     ", more than the " + std::to_string(max_pixels) +
                                                     " pixels allowed");
}

bool has_image_extension(const std::filesystem::path& p) {
  static const std::set<std::string> known{".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"};
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return known.count(ext) > 0;
}

}  // namespace

std::vector<std::string> image_files(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const auto& input : inputs) {
    const std::filesystem::path p(input);
    std::error_code error;  // a looping link: not a folder, and reported as an unreadable image
    if (std::filesystem::is_directory(p, error)) {
      std::vector<std::string> found;
      // Broken or looping links, FIFOs and sockets are not images: skipped, and the walk goes on.
      std::error_code ec;
      for (const auto& entry : std::filesystem::recursive_directory_iterator(p, std::filesystem::directory_options::skip_permission_denied)) {
        if (entry.is_regular_file(ec) && has_image_extension(entry.path())) found.push_back(entry.path().string());
      }
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else {
      files.push_back(input);  // a missing or unreadable file is reported by predict_files
    }
  }
  return files;
}


cv::Mat decode_image(const std::string& bytes, const std::string& name, long max_pixels) {
  ByteStream buffer(bytes.data(), bytes.size());
  std::istream in(&buffer);
  check_pixels(image_size(in, name), name, max_pixels);  // throws ImageError on empty, unknown or corrupt headers
  check_complete(in, name);
  if (bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0xFF && static_cast<unsigned char>(bytes[1]) == 0xD8)
    return decode_jpeg(bytes, name);  // refuses damaged data that cv::imdecode would pass with a warning
  const cv::Mat encoded(1, static_cast<int>(bytes.size()), CV_8U, const_cast<char*>(bytes.data()));
  cv::Mat image = cv::imdecode(encoded, cv::IMREAD_COLOR);
  if (image.empty()) throw ImageError(ImageError::Kind::Corrupt, name + ": cannot decode image (corrupt or truncated file?)");
  return image;
}

void write_image(const std::string& path, const cv::Mat& bgr, const std::vector<int>& params) {
  std::vector<uchar> encoded;
  const std::string ext = std::filesystem::path(path).extension().string();
  if (!cv::imencode(ext.empty() ? ".png" : ext, bgr, encoded, params))
    throw std::runtime_error("cannot encode " + path + " as '" + ext + "'");
  write_file_atomically(path, std::string_view(reinterpret_cast<const char*>(encoded.data()), encoded.size()));
}

cv::Mat read_image(const std::string& path, long max_pixels) {
  check_pixels(image_size(path), path, max_pixels);  // before reading a huge file whole; refuses FIFOs
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw ImageError(ImageError::Kind::Unreadable, path + ": cannot read image file");
  return decode_image(bytes, path, max_pixels);
}

}  // namespace cspn
