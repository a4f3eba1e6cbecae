#pragma once
// Small string helpers shared by the config loader and the command line.
#include <string>
#include <string_view>
#include <vector>

namespace clipper::core {

// Levenshtein distance between a and b.
std::size_t edit_distance(std::string_view a, std::string_view b);

// The candidate closest to `word` by edit distance, or "" when none is within max(2, |word|/3).
std::string nearest(std::string_view word, const std::vector<std::string>& candidates);

std::vector<std::string> split(std::string_view s, char sep);
std::string join(const std::vector<std::string>& parts, std::string_view sep);
std::string trim(std::string_view s);
// `s` itself when it has at most `max` characters; else its first `max` characters followed by
// "... (N characters)", so that an error message quoting hostile input stays readable.
std::string abbreviated(std::string_view s, std::size_t max = 120);

}  // namespace clipper::core

namespace clipper::core {
// "1h02m", "3m12s", "45s" (for ETAs and elapsed times).
std::string format_duration(double seconds);
}  // namespace clipper::core
