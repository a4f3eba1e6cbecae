#pragma once
// Internal to the data part: keeps libpng quiet. libpng prints warnings and errors straight to
// stderr ("libpng warning: iCCP: known incorrect sRGB profile", "libpng error: PNG input buffer is
// incomplete") under OpenCV. Chunks that change nothing in the pixels OpenCV decodes (colour
// profiles, text) are removed before decoding, and a damaged chunk layout (cut short, a bad CRC)
// is found here first and reported with its reason instead of reaching the decoder.
#include <string>

namespace clipper::data::detail {

// Empty when `bytes` is not a PNG or its chunk layout is whole (IHDR first, every chunk complete
// with a matching CRC, IEND at the end); else what is wrong, e.g. "PNG data ends inside chunk
// IDAT (1203 of 2406 bytes)".
std::string png_damage(const std::string& bytes);
// True when `bytes` is a PNG that holds one of those chunks. Reads only the chunk headers.
bool png_has_noisy_chunks(const std::string& bytes);
// `bytes` without those chunks (iCCP, sRGB, cHRM, tEXt, zTXt, iTXt, tIME). A damaged chunk
// layout is left as it is for the decoder to report.
std::string png_without_noisy_chunks(const std::string& bytes);

}  // namespace clipper::data::detail
