#pragma once
// A deterministic corpus of varied captions for the tokenizer tests: plain English, mixed case,
// punctuation, digits, non-Latin scripts, accents and combining marks, emoji, HTML entities,
// contractions, whitespace runs, ftfy's cases (ligatures, widths, curly quotes, control
// characters, terminal escapes), special-token literals and over-long text.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace clipper::test {

class CaptionCorpus {
 public:
  explicit CaptionCorpus(std::uint32_t seed) : rng_(seed) {}

  std::vector<std::string> make(std::size_t count) {
    std::vector<std::string> out;
    out.reserve(count);
    for (std::size_t i = 0; i < count; ++i) out.push_back(caption(i));
    return out;
  }

 private:
  using List = std::vector<std::string>;

  std::size_t below(std::size_t n) { return static_cast<std::size_t>(rng_() % n); }
  const std::string& pick(const List& l) { return l[below(l.size())]; }

  std::string ascii_case(std::string s) {
    switch (below(4)) {
      case 0:
        for (char& c : s)
          if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
        break;
      case 1:
        if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 32);
        break;
      case 2:
        for (char& c : s)
          if (c >= 'a' && c <= 'z' && below(2)) c = static_cast<char>(c - 32);
        break;
      default:
        break;
    }
    return s;
  }

  std::string english() {
    static const List nouns = {"dog",        "cat",         "bicycle",   "mountain", "skyscraper",
                               "pizza",      "children",    "guitar",    "sunset",   "umbrella",
                               "giraffe",    "laptop",      "breakfast", "train",    "lighthouse",
                               "photograph", "kaleidoscope"};
    static const List adjs = {"red",      "tiny", "enormous", "fluffy",    "vintage",   "blurry",
                              "colorful", "wet",  "golden",   "abandoned", "futuristic"};
    static const List verbs = {"sitting on",  "running through", "next to",      "under",
                               "flying over", "parked near",     "reflected in", "hidden behind"};
    static const List places = {"the beach",       "a snowy field",        "the kitchen table",
                                "new york city",   "an old wooden bridge", "the rainforest",
                                "a crowded market"};
    std::string s = pick({"a photo of", "an image of", "close-up of", "a painting of", "there is",
                          "two", "3", "several", "the"});
    s += " " + pick(adjs) + " " + pick(nouns) + " " + pick(verbs) + " " + pick(places);
    return ascii_case(s);
  }

  std::string punctuation() {
    static const List p = {
        "!",   "?",      "...",      ",",     ";",      ":",
        " - ", "--",     "(",        ")",     "[",      "]",
        "{",   "}",      "\"",       "'",     "/",      "\\",
        "@",   "#",      "$",        "%",     "^",      "*",
        "+",   "=",      "~",        "`",     "|",      "_",
        "!!!", "?!",     "#hashtag", "@user", "e-mail", "http://example.com/a_b?c=d&e=f",
        "C++", "x86_64", ":-)",      "<3",    ">_<"};
    std::string s;
    for (std::size_t k = 0, n = 1 + below(4); k < n; ++k) s += pick(p) + (below(2) ? " " : "");
    return s;
  }

  std::string digits() {
    static const List d = {"1920x1080",
                           "3.14159",
                           "2,000,000",
                           "42nd",
                           "1st",
                           "007",
                           "12:30pm",
                           "2024-06-01",
                           "+49 30 1234567",
                           "50%",
                           "$9.99",
                           "\u00bd",
                           "x\u00b2",
                           "\u216b",
                           "\u0663\u0664",
                           "\u096b\u0968",
                           "\uff11\uff12\uff13",
                           "\u2460\u2461",
                           "H\u2082O",
                           "10\u00b0C",
                           "\u0e51\u0e52",
                           "\u4e09\u5341"};
    return pick(d) + (below(2) ? " " + std::to_string(rng_() % 100000) : "");
  }

  std::string script() {
    static const List w = {
        // CJK, kana, Hangul
        "\u6771\u4eac\u30bf\u30ef\u30fc", "\u732b\u304c\u5bdd\u3066\u3044\u308b",
        "\u4e00\u53ea\u5c0f\u72d7\u5728\u8349\u5730\u4e0a", "\ud55c\uad6d\uc5b4 \uc0ac\uc9c4",
        "\u30ab\u30bf\u30ab\u30ca", "\u3072\u3089\u304c\u306a",
        // Arabic, Hebrew, Persian
        "\u0642\u0637\u0629 \u0635\u063a\u064a\u0631\u0629",
        "\u05db\u05dc\u05d1 \u05e9\u05d7\u05d5\u05e8", "\u0645\u0631\u062d\u0628\u0627\u064b",
        // Cyrillic, Greek (final sigma, accents)
        "\u041a\u043e\u0448\u043a\u0430 \u043d\u0430 \u0434\u0438\u0432\u0430\u043d\u0435",
        "\u041c\u041e\u0421\u041a\u0412\u0410", "\u039f\u0394\u039f\u03a3 \u039a\u0391\u0399",
        "\u1f08\u03b8\u03ae\u03bd\u03b1\u03b9", "\u03a3\u039f\u03a6\u0399\u0391\u03a3",
        // Devanagari, Thai, Tamil, Georgian, Armenian, Ethiopic
        "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
        "\u0e41\u0e21\u0e27\u0e19\u0e48\u0e32\u0e23\u0e31\u0e01", "\u0ba4\u0bae\u0bbf\u0bb4\u0bcd",
        "\u10e5\u10d0\u10e0\u10d7\u10e3\u10da\u10d8", "\u0540\u0561\u0575\u0565\u0580\u0565\u0576",
        "\u12a0\u121b\u122d\u129b",
        // Latin with accents, special casing, combining marks
        "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e", "na\u00efve Fa\u00e7ade", "\u00c5NGSTR\u00d6M",
        "\u00d8resund", "\u0130stanbul \u0130ZM\u0130R", "Stra\u00dfe \u1e9e", "Vi\u1ec7t Nam",
        "e\u0301le\u0300ve", "A\u030a", "\u0131\u0130i", "\u01c5ungla", "Dvo\u0159\u00e1k",
        "\u0141\u00f3d\u017a", "\u00fe\u00f0\u00e6", "\u1e9b\u0323", "\u0391\u0345",
        "\u2126 \u212a \u212b", "\u00b5m", "\u017fs \u0027\u017f"};
    return pick(w);
  }

  std::string emoji() {
    static const List e = {
        "\U0001F600",
        "\U0001F436",
        "\U0001F44D\U0001F3FD",
        "\U0001F468\u200D\U0001F469\u200D\U0001F467",
        "\U0001F1EB\U0001F1F7",
        "\u2764\uFE0F",
        "1\uFE0F\u20E3",
        "\u2600",
        "\u2728\u2728",
        "\U0001F355\U0001F355\U0001F355",
        "\u263A",
        "\u00A9\u00AE\u2122",
        "\U0001F3F4\U000E0067\U000E0062\U000E0077\U000E006C\U000E0073\U000E007F"};
    return pick(e);
  }

  std::string entity() {
    static const List h = {"&amp;",
                           "&quot;",
                           "&#39;",
                           "&lt;",
                           "&gt;",
                           "&nbsp;",
                           "&copy;",
                           "&eacute;",
                           "&EACUTE;",
                           "&Eacute;",
                           "&#x27;",
                           "&#8217;",
                           "&hellip;",
                           "&amp;amp;",
                           "&amp;lt;b&amp;gt;",
                           "&amp;amp;amp;quot;",
                           "&notit;",
                           "&ampfoo",
                           "&amp",
                           "&#0;",
                           "&#128;",
                           "&#x80;",
                           "&#xD800;",
                           "&#1114112;",
                           "&#65",
                           "&#x41;&#X42;",
                           "AT&T",
                           "&;",
                           "& ",
                           "&#;",
                           "&unknown;",
                           "&NTILDE;",
                           "&nTILDE;",
                           "&#9731;",
                           "&#x1F600;",
                           "&lt;br/&gt;",
                           "R&amp;D",
                           "&frac12;",
                           "&#59;",
                           "&#1;",
                           "&#13;",
                           "&zwj;",
                           "&shy;",
                           "&thinsp;",
                           "&ensp;&emsp;",
                           "&lsquo;x&rsquo;"};
    return pick(h);
  }

  std::string contraction() {
    static const List c = {"it's",   "IT'S",   "I'm",       "we'll",       "they'd",
                           "you're", "we've",  "'tis",      "rock'n'roll", "don't",
                           "Can't",  "O'Neil", "it\u2019s", "I\u2018ll",   "l\u02BCeau",
                           "'s'",    "''s",    "!'s",       "'RE",         "'lL",
                           "x'y'z",  "'ve'd",  "dogs'",     "the '90s",    "'d"};
    return pick(c);
  }

  std::string whitespace() {
    static const List s = {" ",
                           "  ",
                           "\t",
                           "\n",
                           "\r\n",
                           "\r",
                           "\u00a0",
                           "\u2003",
                           "\u3000",
                           "\u2028",
                           "\xc2"
                           "\x85"
                           "",
                           " \n \t ",
                           "\u1680",
                           "\u202f",
                           "\u205f",
                           "\x1c",
                           "\x1f",
                           "\v",
                           "\f",
                           "\u200b",
                           "\u180e"};
    return pick(s);
  }

  std::string ftfy_case() {
    static const List f = {"\ufb01ne \ufb02ow",
                           "\uff2c\uff2f\uff35\uff24 \uff2e\uff2f\uff29\uff33\uff25",
                           "\uff76\uff80\uff76\uff85",
                           "\u201cquoted\u201d",
                           "\u2018single\u2019",
                           "\u201edeutsch\u201c",
                           "\u201b\u201f",
                           "\x01"
                           "\x02"
                           "bell\x07"
                           "",
                           "del\x7f"
                           "",
                           "\ufeffbom",
                           "\u206a\u206f",
                           "\ufff9ann\ufffb",
                           "\x1b[31mred\x1b[0m",
                           "\x1b[1;4mbold",
                           "\x1b[x",
                           "soft\u00adhyphen",
                           "\u0133sselmeer",
                           "\u0149",
                           "\u01c4\u01c5\u01c6",
                           "\ufb05",
                           "\uffe1",
                           "\u2018\u2019\u201a",
                           "\uff07\uff02",
                           "\u200dzwj\u200c",
                           "\u00a0",
                           "<start_of_text>",
                           "<END_OF_TEXT>",
                           "<\u017ftart_of_text>",
                           "<start_of_text",
                           "a<b>c",
                           "\u00bd\u00bc",
                           "\u2026"};
    return pick(f);
  }

  std::string c1_caption() {
    static const List c = {
        "\xc2"
        "\x80"
        "",
        "\xc2"
        "\x81"
        "",
        "\xc2"
        "\x85"
        "",
        "\xc2"
        "\x8d"
        "",
        "\xc2"
        "\x91"
        "",
        "\xc2"
        "\x92"
        "",
        "\xc2"
        "\x93"
        "",
        "\xc2"
        "\x94"
        "",
        "\xc2"
        "\x96"
        "",
        "\xc2"
        "\x99"
        "",
        "\xc2"
        "\x9d"
        "",
        "\xc2"
        "\x9f"
        ""};
    return "price " + pick(c) + " tag" + pick(c) + " end";
  }

  std::string long_caption() {
    std::string s;
    for (std::size_t k = 0, n = 60 + below(200); k < n; ++k)
      s += (below(5) == 0 ? punctuation() : english()) + " ";
    return s;
  }

  // One long pre-token: letters without spaces (as Chinese or Japanese text is), repeated
  // patterns, or a punctuation run.
  std::string long_word() {
    static const List cjk = {"\u732b", "\u72d7", "\u5728", "\u8349", "\u5730", "\u4e0a",
                             "\u7684", "\u4e00", "\u53ea", "\u5c0f", "\u3044", "\u308b",
                             "\u304c", "\u30bf", "\u30ef", "\u30fc"};
    static const List pieces = {"ab", "a", "ing", "the", "xyz", "\u043a\u043e\u0442", "=-", "!?"};
    const std::size_t len = 20 + below(400);
    std::string s;
    switch (below(4)) {
      case 0:
        for (std::size_t k = 0; k < len; ++k) s += pick(cjk);
        break;
      case 1:
        for (std::size_t k = 0; k < len; ++k) s.push_back(static_cast<char>('a' + below(26)));
        break;
      default: {
        const std::string& p = pick(pieces);
        for (std::size_t k = 0; k < len; ++k) s += p;
      }
    }
    return s;
  }

  std::string fragment() {
    switch (below(10)) {
      case 0:
        return punctuation();
      case 1:
        return digits();
      case 2:
        return script();
      case 3:
        return emoji();
      case 4:
        return entity();
      case 5:
        return contraction();
      case 6:
        return ftfy_case();
      default:
        return english();
    }
  }

  std::string caption(std::size_t i) {
    if (i % 40 == 7) return c1_caption();
    if (i % 25 == 3) return long_caption();
    if (i % 30 == 13) return english() + " " + long_word() + (below(2) ? " " + english() : "");
    if (i % 50 == 11) return std::string(1 + below(3), ' ');
    std::string s = below(6) == 0 ? whitespace() : "";
    for (std::size_t k = 0, n = 1 + below(5); k < n; ++k) {
      if (k) s += below(3) == 0 ? whitespace() : (below(4) == 0 ? "" : " ");
      s += fragment();
    }
    if (below(6) == 0) s += whitespace();
    return s;
  }

  std::mt19937 rng_;
};

}  // namespace clipper::test
