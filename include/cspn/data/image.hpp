#pragma once
// Images: size and completeness from the file header alone, JPEG decoding that refuses damaged
// data, and reading, decoding and writing with those checks. The public API (cspn/api/image.hpp)
// offers read_image, decode_image and write_image from here.
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

#include <opencv2/core/mat.hpp>

#include "cspn/core/errors.hpp"

namespace cspn {

// Images larger than this (width x height, read from the header before decoding) are refused.
inline constexpr long kDefaultMaxPixels = 80'000'000;

// Decodes a JPEG, PNG, WebP or BMP file to BGR uint8. Throws ImageError naming the path when it is
// missing, not a regular file, empty, not an image, truncated or corrupt, or larger than max_pixels.
cv::Mat read_image(const std::string& path, long max_pixels = kDefaultMaxPixels);
// The same checks for an encoded image in memory; `name` (a file name, "upload") goes into errors.
cv::Mat decode_image(const std::string& bytes, const std::string& name, long max_pixels = kDefaultMaxPixels);

// Encodes by the extension of `path` (.jpg, .png, ...) and writes atomically; throws naming the file.
void write_image(const std::string& path, const cv::Mat& bgr, const std::vector<int>& params = {});

// Width and height from the image file's header (JPEG, PNG, WebP, BMP); throws DataError naming the
// path when the file is missing, not a regular file (a FIFO, a folder), empty or not a readable
// image. Readers check every annotated image this way without decoding it.
std::pair<int, int> image_size(const std::string& path);
// The same from a stream positioned at the start of the image; `name` goes into the errors.
std::pair<int, int> image_size(std::istream& in, const std::string& name);

// Throws DataError when a JPEG file lacks its end-of-image marker or a PNG file its IEND chunk
// near the end: a truncated copy, which decoders would otherwise fill in silently.
void check_complete(const std::string& path);
void check_complete(std::istream& in, const std::string& name);

// Image files named by `inputs`: files as given (whatever their extension, and missing ones too, so
// that a wrong name is reported rather than ignored), folders searched recursively for image
// extensions (.jpg .jpeg .png .bmp .webp .tif .tiff, any case), sorted.
std::vector<std::string> image_files(const std::vector<std::string>& inputs);

// JPEG decoding through libjpeg(-turbo) itself rather than cv::imdecode: libjpeg reports damaged
// entropy-coded data (zeroed or garbled blocks, premature end of a segment) only as a warning,
// which OpenCV prints to stderr without the file's name before returning the garbage pixels as a
// good image. Decodes `bytes` to 8-bit BGR (grayscale and CMYK converted), turned upright by its
// EXIF orientation as cv::imdecode does. Throws ImageError(Corrupt) naming `name` with libjpeg's
// message on errors and on warnings about corrupt data; benign warnings (an unknown JFIF revision)
// are ignored.
cv::Mat decode_jpeg(const std::string& bytes, const std::string& name);

}  // namespace cspn
