#pragma once
// The image functions of the public API: read_image (a file), decode_image (bytes in memory) and
// write_image, each with the header checks that refuse missing, truncated, corrupt and oversized
// images with an ImageError naming the file. They live in the data layer, which every image the
// library takes in goes through.
#include "cspn/data/image.hpp"
