#include "clipper/core/redact.hpp"

#include <algorithm>
#include <cctype>
#include <vector>

namespace clipper::core {
namespace {

constexpr std::string_view kMask = "***";

bool name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
}

// `e` moved back by one when the quote there is escaped (an odd run of backslashes before it, as
// in YAML's "...\"..."), so that a mask never splits an escape and unbalances the quoting.
std::size_t before_escape(std::string_view t, std::size_t start, std::size_t e) {
  if (e >= t.size() || (t[e] != '"' && t[e] != '\'')) return e;
  std::size_t k = e;
  while (k > start && t[k - 1] == '\\') --k;
  return (e - k) % 2 == 1 ? e - 1 : e;
}

// Where an unquoted value ends: whitespace, a quote, or a separator of queries and shell commands.
std::size_t value_end(std::string_view t, std::size_t i) {
  const std::size_t start = i;
  while (i < t.size() && !std::isspace(static_cast<unsigned char>(t[i])) && t[i] != '&' &&
         t[i] != ';' && t[i] != '"' && t[i] != '\'' && t[i] != '|' && t[i] != ')')
    ++i;
  return before_escape(t, start, i);
}

// The quote a value starts with at i: ' or ", escaped (\" inside a double-quoted string, as YAML
// and JSON write it) or doubled ('' inside a single-quoted YAML string); empty when none.
std::string_view opening_quote(std::string_view t, std::size_t i) {
  for (std::string_view q : {"\\\"", "\\'", "''", "\"", "'"})
    if (t.compare(i, q.size(), q) == 0) return t.substr(i, q.size());
  return {};
}

// Where the quoted value at i (opening quote q) closes, on its line: past the closing quote; npos
// when it does not close there.
std::size_t closing_end(std::string_view t, std::size_t i, std::string_view q) {
  const std::size_t close = t.find(q, i + q.size());
  return close < t.find('\n', i) ? close + q.size() : std::string_view::npos;
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

// HTTP headers that carry credentials: Authorization, Proxy-Authorization, Cookie, X-... headers
// with a secret name (X-Api-Key, X-Auth-Token), and any hyphenated name that is a secret name
// (PRIVATE-TOKEN, Job-Token, Api-Key). A plain "name: value" (YAML keys such as text_key) is no
// header.
bool secret_header(std::string_view name) {
  const std::string n = lower(name);
  if (n == "authorization" || n == "proxy-authorization" || n == "cookie" || n == "set-cookie")
    return true;
  if (n.rfind("x-", 0) == 0 && secret_name(n.substr(2))) return true;
  return n.find('-') != std::string::npos && n.find_first_of("_.") == std::string::npos &&
         secret_name(n);
}

// Options whose value is USER:PASSWORD (curl -u/--user/--proxy-user, wget --user=..., curl
// --cert FILE:PASSWORD): masked when the value holds a ':'.
bool user_password_option(std::string_view name) {
  for (std::string_view o : {"-u", "-U", "--user", "--proxy-user", "--http-user", "--ftp-user",
                             "--cert", "--proxy-cert"})
    if (name == o) return true;
  return false;
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

class Redactor {
 public:
  explicit Redactor(std::string_view t) : t_(t) { out_.reserve(t.size()); }

  std::string run() {
    while (i_ < t_.size()) {
      if (t_.compare(i_, 3, "://") == 0) {
        i_ = redact_userinfo(t_, i_, &out_);
      } else if (!name_char(t_[i_]) || (i_ > 0 && name_char(t_[i_ - 1]))) {
        out_ += t_[i_++];
      } else {
        word();
      }
    }
    return std::move(out_);
  }

 private:
  // A word starts at i_: NAME=VALUE, --NAME VALUE, -u USER:PASSWORD, Header: value or Bearer X.
  void word() {
    std::size_t j = i_;
    while (j < t_.size() && name_char(t_[j])) ++j;
    const std::string_view name = t_.substr(i_, j - i_);
    out_.append(name);
    i_ = j;
    if (secret_header(name) && header()) return;
    if (lower(name) == "bearer" && i_ + 1 < t_.size() && t_[i_] == ' ') return mask(1);
    const bool option = name.size() > 2 && name.substr(0, 2) == "--";
    // NAME=VALUE, or an option and its value after a space (a value does not start with '-').
    const bool separated =
        i_ + 1 < t_.size() &&
        (t_[i_] == '=' || (t_[i_] == ' ' && (option || name.size() == 2) && t_[i_ + 1] != '-'));
    if (user_password_option(name) && separated) {
      const std::string_view q = opening_quote(t_, i_ + 1);
      std::size_t end = q.empty() ? std::string_view::npos : closing_end(t_, i_ + 1, q);
      if (end == std::string_view::npos) end = value_end(t_, i_ + 1 + q.size());
      if (t_.substr(i_ + 1, end - i_ - 1).find(':') != std::string_view::npos) mask(1);
      return;
    }
    if (!secret_name(option ? name.substr(2) : name)) return;
    if (i_ < t_.size() && t_[i_] == '=')
      mask(1);
    else if (option && separated)
      mask(1);
  }

  // "Name: value" or "Name:value": the value up to its closing quote or the end of the line.
  bool header() {
    if (i_ >= t_.size() || t_[i_] != ':') return false;
    std::size_t j = i_ + 1;
    while (j < t_.size() && (t_[j] == ' ' || t_[j] == '\t')) ++j;
    if (j >= t_.size() || t_[j] == '\n' || t_[j] == '"' || t_[j] == '\'' || t_[j] == '\\')
      return false;
    out_.append(t_.substr(i_, j - i_)).append(kMask);
    i_ = j;
    while (i_ < t_.size() && t_[i_] != '"' && t_[i_] != '\'' && t_[i_] != '\n') ++i_;
    i_ = std::max(before_escape(t_, j, i_), j);
    return true;
  }

  // The separator (skip characters) copied, then the value masked: a quoted one whole, quotes
  // and all; after a quote that does not close on its line, the quote kept and the word after it
  // masked; else up to value_end.
  void mask(std::size_t skip) {
    out_.append(t_.substr(i_, skip));
    i_ += skip;
    const std::string_view q = opening_quote(t_, i_);
    if (!q.empty()) {
      if (const std::size_t end = closing_end(t_, i_, q); end != std::string_view::npos) {
        out_.append(kMask);
        i_ = end;
        return;
      }
      if (const std::size_t end = value_end(t_, i_ + q.size()); end > i_ + q.size()) {
        out_.append(q).append(kMask);
        i_ = end;
        return;
      }
    }
    out_.append(kMask);
    i_ = value_end(t_, i_);
  }

  std::string_view t_;
  std::size_t i_ = 0;
  std::string out_;
};

}  // namespace

bool secret_name(std::string_view name) {
  // Word by word, so that data keys (text_key, --csv-img-key, label_key) stay readable while
  // api_key, AWS_SECRET_ACCESS_KEY or a bare --key are masked.
  const std::vector<std::string> words = name_words(name);
  for (std::size_t i = 0; i < words.size(); ++i) {
    const std::string& w = words[i];
    for (const char* s : {"token", "secret", "password", "passwd", "pwd", "credential", "auth",
                          "session", "apikey", "accesskey", "privatekey", "bearer"})
      if (w.find(s) != std::string::npos) return true;
    if (w == "sig" || w.rfind("signature", 0) == 0) return true;
    if (w == "key" && (i == 0 || key_qualifier(words[i - 1]))) return true;
    // aws s3 --sse-c-key / --sse-c-copy-source-key: the customer's encryption key.
    if (w == "sse" && i + 1 < words.size() && words[i + 1] == "c" && words.back() == "key")
      return true;
  }
  return false;
}

std::string redact_secrets(std::string_view t) {
  return Redactor(t).run();
}

}  // namespace clipper::core
