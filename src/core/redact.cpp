#include "clipper/core/redact.hpp"

#include <cctype>
#include <vector>

namespace clipper::core {
namespace {

constexpr std::string_view kMask = "***";

bool name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
}

// Where a value ends: whitespace, a quote, or a separator of queries and shell commands.
std::size_t value_end(std::string_view t, std::size_t i) {
  while (i < t.size() && !std::isspace(static_cast<unsigned char>(t[i])) && t[i] != '&' &&
         t[i] != ';' && t[i] != '"' && t[i] != '\'' && t[i] != '|' && t[i] != ')')
    ++i;
  return i;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// "scheme://" at i: the user information up to '@' (before any '/') is masked.
std::size_t redact_userinfo(std::string_view t, std::size_t i, std::string* out) {
  const std::size_t start = i + 3;
  std::size_t j = start;
  while (j < t.size() && t[j] != '@' && t[j] != '/' &&
         !std::isspace(static_cast<unsigned char>(t[j])))
    ++j;
  out->append("://");
  if (j < t.size() && t[j] == '@' && j > start) {
    out->append(kMask);
    return j;  // the '@' is copied next
  }
  return start;
}

// HTTP headers that carry credentials: Authorization, Proxy-Authorization, Cookie, and X-...
// headers with a secret name (X-Api-Key, X-Auth-Token). Plain "name: value" text (YAML keys such
// as text_key) is not a header.
bool secret_header(std::string_view name) {
  const std::string n = lower(name);
  return n == "authorization" || n == "proxy-authorization" || n == "cookie" ||
         (n.rfind("x-", 0) == 0 && secret_name(n.substr(2)));
}

// NAME split at '_', '-' and '.', lower case.
std::vector<std::string> name_words(std::string_view name) {
  std::vector<std::string> words(1);
  for (char c : name) {
    if (c == '_' || c == '-' || c == '.') {
      if (!words.back().empty()) words.emplace_back();
      continue;
    }
    words.back() += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  if (words.back().empty()) words.pop_back();
  return words;
}

// A word before "key" that makes it a credential (api_key, ACCESS_KEY, account-key, ...).
bool key_qualifier(std::string_view word) {
  for (const char* q : {"api", "access", "secret", "private", "account", "storage", "sas", "master",
                        "signing", "encryption", "subscription", "client", "shared", "ssh", "x"})
    if (word == q) return true;
  return false;
}

}  // namespace

bool secret_name(std::string_view name) {
  // Word by word, so that data keys (text_key, --csv-img-key, label_key) stay readable while
  // api_key, AWS_SECRET_ACCESS_KEY or a bare --key are masked.
  const std::vector<std::string> words = name_words(name);
  for (std::size_t i = 0; i < words.size(); ++i) {
    const std::string& w = words[i];
    for (const char* s : {"token", "secret", "password", "passwd", "pwd", "credential", "auth",
                          "session", "apikey", "accesskey", "privatekey"})
      if (w.find(s) != std::string::npos) return true;
    if (w == "sig" || w.rfind("signature", 0) == 0) return true;
    if (w == "key" && (i == 0 || key_qualifier(words[i - 1]))) return true;
  }
  return false;
}

std::string redact_secrets(std::string_view t) {
  std::string out;
  out.reserve(t.size());
  std::size_t i = 0;
  while (i < t.size()) {
    if (t.compare(i, 3, "://") == 0) {
      i = redact_userinfo(t, i, &out);
      continue;
    }
    if (!name_char(t[i]) || (i > 0 && name_char(t[i - 1]))) {
      out += t[i++];
      continue;
    }
    // A word starts at i: NAME=VALUE, --NAME VALUE, or Header: value.
    std::size_t j = i;
    while (j < t.size() && name_char(t[j])) ++j;
    const std::string_view name = t.substr(i, j - i);
    out.append(name);
    i = j;
    if (secret_header(name) && t.compare(i, 2, ": ") == 0) {
      out.append(": ").append(kMask);
      while (i < t.size() && t[i] != '"' && t[i] != '\'' && t[i] != '\n') ++i;
      continue;
    }
    const bool option = name.size() > 2 && name.substr(0, 2) == "--";
    if (!secret_name(option ? name.substr(2) : name)) continue;
    if (i < t.size() && t[i] == '=') {
      out.append("=").append(kMask);
      i = value_end(t, i + 1);
    } else if (option && i + 1 < t.size() && t[i] == ' ' && t[i + 1] != '-') {
      out.append(" ").append(kMask);
      i = value_end(t, i + 1);
    }
  }
  return out;
}

}  // namespace clipper::core
