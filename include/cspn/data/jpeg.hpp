#pragma once
// JPEG decoding through libjpeg(-turbo) itself rather than cv::imdecode, for one reason: libjpeg
// reports damaged entropy-coded data (zeroed or garbled blocks, premature end of a segment) only as
// a warning, which OpenCV prints to stderr without the file's name and then returns the garbage
// pixels as a good image. Here such warnings make the image an error that names it.
#include <string>

#include <opencv2/core/mat.hpp>

namespace cspn {

// Decodes a JPEG held in `bytes` to 8-bit BGR (grayscale and CMYK converted), turned upright by its
// EXIF orientation as cv::imdecode does. Throws ImageError(Corrupt) naming `name` with libjpeg's
// message on errors and on warnings about corrupt data; benign warnings (an unknown JFIF revision)
// are ignored.
cv::Mat decode_jpeg(const std::string& bytes, const std::string& name);

}  // namespace cspn
