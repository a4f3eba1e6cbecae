// The cleaning steps of the CLIP tokenizer (expected strings from open_clip's _clean_lower and
// _clean_whitespace with ftfy 6.3.1 and Python 3.11's html.unescape).
#include <gtest/gtest.h>

#include "clipper/tokenizer/clip_clean.hpp"
#include "clipper/tokenizer/sentencepiece_train.hpp"

namespace {

using clipper::tokenizer::clean_caption;
using clipper::tokenizer::clip_clean;

TEST(ClipClean, HtmlUnescapesUntilStableThenTwiceMore) {
  EXPECT_EQ(clip_clean("&amp;amp;amp;amp;lt;"), "<");
  // With '<' in the line, ftfy leaves entities alone; html.unescape still runs twice.
  EXPECT_EQ(clip_clean("a<b &amp;amp; c"), "a<b & c");
  // ftfy's "auto" is decided line by line: the second line's '<' does not stop the first.
  EXPECT_EQ(clip_clean("line1 &amp;amp;\nline2 <"), "line1 & line2 <");
}

TEST(ClipClean, PythonHtmlUnescapeRules) {
  EXPECT_EQ(clip_clean("&notit; &ampfoo &#65 &#x41; &#0; &#128; &#xD800; &#1114112; &#1; &;"),
            "\u00acit; &foo a a \ufffd \u20ac \ufffd \ufffd &;");
  EXPECT_EQ(clean_caption("&copy2024 &Eacute &#99999999999999999999;"), "\u00a92024 \u00c9 \ufffd");
  EXPECT_EQ(clean_caption("&EACUTE; &nTILDE;"), "\u00c9 &nTILDE;");  // ftfy's all-caps names
}

TEST(ClipClean, FullUnicodeLowercase) {
  EXPECT_EQ(clip_clean("\u039f\u0394\u039f\u03a3 \u03a3\u0391\u03a3"),
            "\u03bf\u03b4\u03bf\u03c2 \u03c3\u03b1\u03c2");  // final sigma
  EXPECT_EQ(clip_clean("\u0130STANBUL"), "i\u0307stanbul");
}

TEST(ClipClean, FtfyFixes) {
  EXPECT_EQ(clip_clean("e\u0301"), "\u00e9");              // NFC
  EXPECT_EQ(clip_clean("\x1b[31mred\x1b[0m x"), "red x");  // terminal escapes
  EXPECT_EQ(clip_clean("\xc2\x80 \xc2\x92"), "\u20ac '");  // C1 as Windows-1252, uncurled
  EXPECT_EQ(clean_caption("\uff76\uff80\uff76\uff85 \uff21\uff22\uff23"),
            "\u30ab\u30bf\u30ab\u30ca ABC");                          // character width
  EXPECT_EQ(clean_caption("\u0133 \u0149 \u01c5"), "ij 'n D\u017e");  // ligatures
  EXPECT_EQ(clip_clean("\ufeff\x01x\x7f"), "x");                      // control characters
}

TEST(ClipClean, WhitespaceCollapses) {
  EXPECT_EQ(clip_clean("  a \u3000 b\u2028c\xc2\x85"
                       "d  "),
            "a b c\u2026d");
  EXPECT_EQ(clip_clean(" \t\r\n "), "");
}

TEST(ClipClean, IllFormedUtf8BecomesReplacementCharacters) {
  EXPECT_EQ(clip_clean("a\xff"
                       "b\xe2\x82"
                       "c"),
            "a\ufffdb\ufffdc");
}

}  // namespace
