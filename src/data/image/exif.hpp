#pragma once
// EXIF orientation, shared by the JPEG decoder (which turns the pixels) and the header reader
// (which reports the size of the turned image), so that both agree.
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace cspn::image_detail {

// The orientation (1..8) in the payload of an APP1 segment; 1 (upright) where it is no EXIF
// segment or holds no readable orientation.
inline int exif_orientation(const unsigned char* app1, std::size_t length) {
  if (length < 14 || std::memcmp(app1, "Exif\0\0", 6) != 0) return 1;
  const unsigned char* tiff = app1 + 6;
  const std::size_t size = length - 6;
  const bool little = tiff[0] == 'I' && tiff[1] == 'I';
  if (!little && !(tiff[0] == 'M' && tiff[1] == 'M')) return 1;
  auto read = [&](std::size_t at, int bytes) -> std::uint32_t {
    std::uint32_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= std::uint32_t(tiff[at + (little ? i : bytes - 1 - i)]) << (8 * i);
    return v;
  };
  const std::size_t ifd = read(4, 4);
  if (ifd + 2 > size) return 1;
  const std::size_t entries = read(ifd, 2);
  for (std::size_t e = 0; e < entries && ifd + 2 + 12 * (e + 1) <= size; ++e) {
    const std::size_t at = ifd + 2 + 12 * e;
    if (read(at, 2) == 0x0112 && read(at + 2, 2) == 3) {  // Orientation, type SHORT
      const auto value = static_cast<int>(read(at + 8, 2));
      return value >= 1 && value <= 8 ? value : 1;
    }
  }
  return 1;
}

// Orientations 5 to 8 turn the image by a quarter: width and height swap.
inline bool swaps_sides(int orientation) { return orientation >= 5; }

}  // namespace cspn::image_detail
