// Image size from the file header alone (no decoding): readers check every annotated image, and
// decoding 100k JPEGs just to learn their size would dominate reading a data set.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>

#include "cspn/data/image.hpp"
#include "exif.hpp"

namespace cspn {
namespace {

[[noreturn]] void bad_image(const std::string& path, const std::string& what,
                            ImageError::Kind kind = ImageError::Kind::Corrupt) {
  throw ImageError(kind, path + ": " + what);
}

std::uint32_t big_endian(const unsigned char* p, int bytes) {
  std::uint32_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | p[i];
  return v;
}

std::uint32_t little_endian(const unsigned char* p, int bytes) {
  std::uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Walks the marker segments after SOI up to the first frame header (SOF0..SOF15 but DHT C4,
// JPG C8 and DAC CC, which share the range); APPn/COM/DQT/... segments are skipped by length, but
// for an EXIF APP1 segment's orientation: the size is the turned image's, as the decoder gives it.
std::pair<int, int> jpeg_size(std::istream& in, const std::string& path) {
  in.seekg(2);
  int orientation = 1;
  bool exif_seen = false;
  for (;;) {
    int c = in.get();
    if (c != 0xFF) bad_image(path, c == EOF ? "truncated JPEG: no frame header" : "corrupt JPEG: expected a marker");
    while (c == 0xFF) c = in.get();  // fill bytes
    if (c == EOF) bad_image(path, "truncated JPEG: no frame header");
    const int marker = c;
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) continue;  // markers without a length
    if (marker == 0xD9 || marker == 0xDA)
      bad_image(path, "corrupt JPEG: image data starts before any frame header (SOF)");
    unsigned char len_bytes[2];
    if (!in.read(reinterpret_cast<char*>(len_bytes), 2)) bad_image(path, "truncated JPEG segment");
    const std::uint32_t length = big_endian(len_bytes, 2);
    if (length < 2) bad_image(path, "corrupt JPEG: segment length " + std::to_string(length) + " < 2");
    const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (marker == 0xE1 && !exif_seen) {
      std::string app1(length - 2, '\0');
      if (!in.read(app1.data(), static_cast<std::streamsize>(app1.size()))) bad_image(path, "truncated JPEG segment");
      exif_seen = app1.compare(0, 6, std::string("Exif\0\0", 6)) == 0;
      if (exif_seen)
        orientation = image_detail::exif_orientation(reinterpret_cast<const unsigned char*>(app1.data()), app1.size());
      continue;
    }
    if (!sof) {
      in.seekg(static_cast<std::streamoff>(length - 2), std::ios::cur);
      continue;
    }
    // SOF payload: precision (1), height (2), width (2), components...
    unsigned char frame[5];
    if (length < 7 || !in.read(reinterpret_cast<char*>(frame), 5)) bad_image(path, "truncated JPEG frame header");
    const int height = static_cast<int>(big_endian(frame + 1, 2));
    const int width = static_cast<int>(big_endian(frame + 3, 2));
    if (width <= 0 || height <= 0)
      bad_image(path, "JPEG frame header gives size " + std::to_string(width) + "x" + std::to_string(height));
    return image_detail::swaps_sides(orientation) ? std::pair{height, width} : std::pair{width, height};
  }
}

// The WebP canvas size: RIFF/WEBP container, then a lossy (VP8), lossless (VP8L) or extended
// (VP8X) first chunk, each of which stores the size its own way.
std::pair<int, int> webp_size(const std::array<unsigned char, 30>& head, std::size_t got, const std::string& path) {
  if (got < 30) bad_image(path, "truncated WebP header");
  const std::string chunk(reinterpret_cast<const char*>(&head[12]), 4);
  std::int64_t width = 0, height = 0;
  if (chunk == "VP8 ") {
    width = little_endian(&head[26], 2) & 0x3FFF;
    height = little_endian(&head[28], 2) & 0x3FFF;
  } else if (chunk == "VP8L") {
    const std::uint32_t bits = little_endian(&head[21], 4);
    width = (bits & 0x3FFF) + 1;
    height = ((bits >> 14) & 0x3FFF) + 1;
  } else if (chunk == "VP8X") {
    width = little_endian(&head[24], 3) + 1;
    height = little_endian(&head[27], 3) + 1;
  } else {
    bad_image(path, "corrupt WebP: unknown first chunk '" + chunk + "'");
  }
  if (width <= 0 || height <= 0)
    bad_image(path, "WebP header gives size " + std::to_string(width) + "x" + std::to_string(height));
  return {static_cast<int>(width), static_cast<int>(height)};
}

}  // namespace

std::pair<int, int> image_size(const std::string& path) {
  // Only regular files (links followed) are images: opening a FIFO would wait for a writer forever.
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status))
    bad_image(path, "cannot open image file (missing or a broken link)", ImageError::Kind::Unreadable);
  if (!std::filesystem::is_regular_file(status)) bad_image(path, "not a regular file", ImageError::Kind::Unreadable);
  std::ifstream in(path, std::ios::binary);
  if (!in) bad_image(path, "cannot open image file", ImageError::Kind::Unreadable);
  return image_size(in, path);
}

std::pair<int, int> image_size(std::istream& in, const std::string& path) {
  // 30 bytes cover the PNG IHDR fields, the BMP info-header size fields and the WebP sizes.
  std::array<unsigned char, 30> head{};
  in.read(reinterpret_cast<char*>(head.data()), head.size());
  const auto got = static_cast<std::size_t>(in.gcount());
  if (got == 0) bad_image(path, "empty image file");
  in.clear();

  if (got >= 2 && head[0] == 0xFF && head[1] == 0xD8) return jpeg_size(in, path);

  static constexpr unsigned char kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (got >= 8 && std::equal(kPng, kPng + 8, head.begin())) {
    if (got < 24) bad_image(path, "truncated PNG header");
    if (std::string(reinterpret_cast<const char*>(&head[12]), 4) != "IHDR")
      bad_image(path, "corrupt PNG: first chunk is not IHDR");
    const auto width = static_cast<std::int64_t>(big_endian(&head[16], 4));
    const auto height = static_cast<std::int64_t>(big_endian(&head[20], 4));
    if (width <= 0 || height <= 0 || width > INT32_MAX || height > INT32_MAX)
      bad_image(path, "PNG header gives size " + std::to_string(width) + "x" + std::to_string(height));
    return {static_cast<int>(width), static_cast<int>(height)};
  }

  if (got >= 2 && head[0] == 'B' && head[1] == 'M') {
    if (got < 26) bad_image(path, "truncated BMP header");
    const std::uint32_t info_size = little_endian(&head[14], 4);
    std::int64_t width = 0, height = 0;
    if (info_size == 12) {  // BITMAPCOREHEADER: 16-bit unsigned sizes
      width = little_endian(&head[18], 2);
      height = little_endian(&head[20], 2);
    } else if (info_size >= 40) {  // BITMAPINFOHEADER and later: 32-bit signed, height < 0 = top-down
      width = static_cast<std::int32_t>(little_endian(&head[18], 4));
      height = static_cast<std::int32_t>(little_endian(&head[22], 4));
      if (height < 0) height = -height;
    } else {
      bad_image(path, "corrupt BMP: info header size " + std::to_string(info_size));
    }
    if (width <= 0 || height <= 0)
      bad_image(path, "BMP header gives size " + std::to_string(width) + "x" + std::to_string(height));
    return {static_cast<int>(width), static_cast<int>(height)};
  }

  if (got >= 12 && std::string(reinterpret_cast<const char*>(head.data()), 4) == "RIFF" &&
      std::string(reinterpret_cast<const char*>(&head[8]), 4) == "WEBP")
    return webp_size(head, got, path);

  char first[16];
  std::snprintf(first, sizeof first, "%02x %02x", head[0], got > 1 ? head[1] : 0);
  bad_image(path, std::string("not a JPEG, PNG, WebP or BMP file (starts with bytes ") + first + ")",
            ImageError::Kind::Unsupported);
}

void check_complete(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  check_complete(in, path);
}

void check_complete(std::istream& in, const std::string& path) {
  in.clear();
  in.seekg(0);
  std::array<unsigned char, 8> head{};
  if (!in.read(reinterpret_cast<char*>(head.data()), head.size())) return;  // image_size reports short files
  const bool jpeg = head[0] == 0xFF && head[1] == 0xD8;
  const bool png = head[0] == 0x89 && head[1] == 'P' && head[2] == 'N' && head[3] == 'G';
  if (!jpeg && !png) return;
  // The end marker is searched in the last 4 KiB: some writers append a few bytes after it.
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff tail = std::min<std::streamoff>(size, 4096);
  std::string bytes(static_cast<size_t>(tail), '\0');
  in.seekg(size - tail);
  in.read(bytes.data(), tail);
  if (jpeg && bytes.find("\xFF\xD9") == std::string::npos)
    bad_image(path, "truncated JPEG: no end-of-image marker");
  if (png && bytes.find("IEND") == std::string::npos) bad_image(path, "truncated PNG: no IEND chunk");
}

}  // namespace cspn
