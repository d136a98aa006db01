#include "cspn/data/image.hpp"

#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include <opencv2/core.hpp>
#include <jpeglib.h>
#include <jerror.h>

#include "cspn/core/errors.hpp"
#include "exif.hpp"

namespace cspn {

namespace {

struct ErrorState {
  jpeg_error_mgr mgr;  // first member: libjpeg hands back a pointer to it
  std::jmp_buf jump;
  char error[JMSG_LENGTH_MAX] = {};
  char corrupt_warning[JMSG_LENGTH_MAX] = {};
};

// Warnings that mean the pixels are not what was encoded.
bool is_corrupt_data_warning(int code) {
  switch (code) {
    case JWRN_EXTRANEOUS_DATA:
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_ARITH_BAD_CODE:
    case JWRN_JPEG_EOF:
    case JWRN_MUST_RESYNC:
    case JWRN_BOGUS_PROGRESSION:
    case JWRN_NOT_SEQUENTIAL:
    case JWRN_TOO_MUCH_DATA:
      return true;
    default:
      return false;
  }
}

void on_error(j_common_ptr cinfo) {
  auto* state = reinterpret_cast<ErrorState*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, state->error);
  std::longjmp(state->jump, 1);
}

// Level -1 is a warning; higher levels are trace messages. Nothing is printed.
void on_message(j_common_ptr cinfo, int level) {
  auto* state = reinterpret_cast<ErrorState*>(cinfo->err);
  if (level >= 0) return;
  if (is_corrupt_data_warning(cinfo->err->msg_code) && !state->corrupt_warning[0])
    (*cinfo->err->format_message)(cinfo, state->corrupt_warning);
  ++cinfo->err->num_warnings;
}

// EXIF orientation (1..8) from the first APP1 "Exif" segment; 1 (upright) when absent or unreadable.
int exif_orientation(const jpeg_decompress_struct& cinfo) {
  for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next)
    if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 && std::memcmp(m->data, "Exif\0\0", 6) == 0)
      return image_detail::exif_orientation(m->data, m->data_length);
  return 1;
}

// The same turns as cv::imdecode applies.
void apply_orientation(cv::Mat& image, int orientation) {
  switch (orientation) {
    case 2: cv::flip(image, image, 1); break;
    case 3: cv::flip(image, image, -1); break;
    case 4: cv::flip(image, image, 0); break;
    case 5: cv::transpose(image, image); break;
    case 6: cv::transpose(image, image); cv::flip(image, image, 1); break;
    case 7: cv::transpose(image, image); cv::flip(image, image, -1); break;
    case 8: cv::transpose(image, image); cv::flip(image, image, 0); break;
    default: break;
  }
}

// CMYK as Adobe writes it (inverted): each channel times K.
cv::Mat cmyk_to_bgr(const cv::Mat& cmyk) {
  cv::Mat bgr(cmyk.rows, cmyk.cols, CV_8UC3);
  for (int y = 0; y < cmyk.rows; ++y) {
    const std::uint8_t* in = cmyk.ptr<std::uint8_t>(y);
    std::uint8_t* out = bgr.ptr<std::uint8_t>(y);
    for (int x = 0; x < cmyk.cols; ++x, in += 4, out += 3) {
      const int k = in[3];
      out[0] = static_cast<std::uint8_t>(in[2] * k / 255);
      out[1] = static_cast<std::uint8_t>(in[1] * k / 255);
      out[2] = static_cast<std::uint8_t>(in[0] * k / 255);
    }
  }
  return bgr;
}

// Everything between setjmp and a possible longjmp lives behind pointers, so that nothing this
// frame owns is left indeterminate by the jump. Returns false when libjpeg raised an error.
bool decode(jpeg_decompress_struct* cinfo, ErrorState* state, const std::string* bytes, cv::Mat* pixels,
            int* orientation) {
  if (setjmp(state->jump)) return false;
  jpeg_create_decompress(cinfo);
  jpeg_mem_src(cinfo, reinterpret_cast<const unsigned char*>(bytes->data()), static_cast<unsigned long>(bytes->size()));
  jpeg_save_markers(cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(cinfo, TRUE);
  const bool cmyk = cinfo->jpeg_color_space == JCS_CMYK || cinfo->jpeg_color_space == JCS_YCCK;
  cinfo->out_color_space = cmyk ? JCS_CMYK : JCS_EXT_BGR;
  jpeg_start_decompress(cinfo);
  pixels->create(static_cast<int>(cinfo->output_height), static_cast<int>(cinfo->output_width), cmyk ? CV_8UC4 : CV_8UC3);
  while (cinfo->output_scanline < cinfo->output_height) {
    JSAMPROW row = pixels->ptr<JSAMPLE>(static_cast<int>(cinfo->output_scanline));
    jpeg_read_scanlines(cinfo, &row, 1);
  }
  *orientation = exif_orientation(*cinfo);
  jpeg_finish_decompress(cinfo);
  return true;
}

}  // namespace

cv::Mat decode_jpeg(const std::string& bytes, const std::string& name) {
  jpeg_decompress_struct cinfo{};
  ErrorState state;
  cinfo.err = jpeg_std_error(&state.mgr);
  state.mgr.error_exit = on_error;
  state.mgr.emit_message = on_message;
  cv::Mat pixels;
  int orientation = 1;
  const bool ok = decode(&cinfo, &state, &bytes, &pixels, &orientation);
  jpeg_destroy_decompress(&cinfo);
  if (!ok) throw ImageError(ImageError::Kind::Corrupt, name + ": cannot decode JPEG: " + state.error);
  if (state.corrupt_warning[0])
    throw ImageError(ImageError::Kind::Corrupt, name + ": corrupt JPEG data (" + state.corrupt_warning + ")");
  if (pixels.channels() == 4) pixels = cmyk_to_bgr(pixels);
  apply_orientation(pixels, orientation);
  return pixels;
}

}  // namespace cspn
