#include "clipper/config/loader.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <sstream>

#include "clipper/config/schema.hpp"
#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "clipper/core/redact.hpp"
#include "clipper/core/text.hpp"

namespace clipper::config {
namespace {

using core::InputError;

std::vector<std::string> all_key_names() {
  std::vector<std::string> names;
  for (const auto& k : keys()) names.push_back(k.key);
  return names;
}

bool is_section(const std::string& prefix) {
  for (const auto& k : keys())
    if (k.key.size() > prefix.size() && k.key.compare(0, prefix.size(), prefix) == 0 &&
        k.key[prefix.size()] == '.')
      return true;
  return false;
}

std::string leaf(const std::string& key) {
  const auto dot = key.rfind('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

// A key of another section with the same last component (train.lr -> optim.lr): a user who
// puts a key in the wrong section has usually spelled the key itself right. With `fuzzy`, the
// nearest last component (of at least 4 letters: short ones are near everything).
std::string key_by_leaf(const std::string& key, bool fuzzy) {
  const std::string want = leaf(key);
  if (fuzzy) {
    if (want.size() < 4) return {};
    std::vector<std::string> leaves;
    for (const auto& k : keys()) leaves.push_back(leaf(k.key));
    const std::string best = core::nearest(want, leaves);
    for (const auto& k : keys())
      if (!best.empty() && leaf(k.key) == best) return k.key;
    return {};
  }
  for (const auto& k : keys())
    if (leaf(k.key) == want && k.key != key) return k.key;
  return {};
}

std::vector<std::string> section_keys(const std::string& key) {
  std::vector<std::string> same;
  const auto dot = key.rfind('.');
  if (dot == std::string::npos) return same;
  for (const auto& k : keys())
    if (k.key.compare(0, dot + 1, key, 0, dot + 1) == 0) same.push_back(k.key);
  return same;
}

std::string unknown_key_message(const std::string& where, const std::string& key) {
  std::string msg = where + "unknown key '" + key + "'";
  std::string hint = key_by_leaf(key, /*fuzzy=*/false);
  if (hint.empty()) hint = core::nearest(key, all_key_names());
  if (hint.empty()) hint = key_by_leaf(key, /*fuzzy=*/true);
  if (hint.empty()) {
    const auto same = section_keys(key);
    if (!same.empty())
      return msg + "; keys of section '" + key.substr(0, key.rfind('.')) +
             "': " + core::join(same, ", ");
  }
  if (!hint.empty())
    msg += "; did you mean '" + hint + "'?";
  else
    msg += " (`clipper config keys` lists every key)";
  return msg;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// Parses one scalar text as `type` (a scalar type); throws a short reason on failure.
Value parse_scalar(const std::string& text, ValueType type) {
  switch (type) {
    case ValueType::boolean: {
      const std::string t = lower(text);
      if (t == "true" || t == "yes" || t == "on") return true;
      if (t == "false" || t == "no" || t == "off") return false;
      throw InputError("is not a bool (expected true or false)");
    }
    case ValueType::integer: {
      std::int64_t v = 0;
      const char* b = text.data();
      const char* e = b + text.size();
      auto [p, ec] = std::from_chars(b, e, v);
      if (ec == std::errc() && p == e && !text.empty()) return v;
      throw InputError("is not an int (expected a whole number, e.g. 64)");
    }
    case ValueType::number: {
      errno = 0;
      char* end = nullptr;
      const double v = std::strtod(text.c_str(), &end);
      if (!text.empty() && end == text.c_str() + text.size() && errno == 0 &&
          text.find_first_of("xXnN") == std::string::npos)
        return v;
      throw InputError("is not a float (expected a number, e.g. 0.0005 or 5e-4)");
    }
    default:
      return text;
  }
}

ValueType element_type(ValueType list) {
  switch (list) {
    case ValueType::string_list:
      return ValueType::string;
    case ValueType::integer_list:
      return ValueType::integer;
    case ValueType::number_list:
      return ValueType::number;
    default:
      return list;
  }
}

Value make_list(ValueType type, const std::vector<Value>& items) {
  switch (type) {
    case ValueType::string_list: {
      std::vector<std::string> v;
      for (const auto& i : items) v.push_back(std::get<std::string>(i));
      return v;
    }
    case ValueType::integer_list: {
      std::vector<std::int64_t> v;
      for (const auto& i : items) v.push_back(std::get<std::int64_t>(i));
      return v;
    }
    default: {
      std::vector<double> v;
      for (const auto& i : items) v.push_back(std::get<double>(i));
      return v;
    }
  }
}

bool is_list(ValueType t) {
  return t == ValueType::string_list || t == ValueType::integer_list || t == ValueType::number_list;
}

void check_value(const KeyInfo& k, const Value& v, const std::string& shown) {
  if (!k.choices.empty()) {
    // A choice key holds one name; a choice list (lora.targets) names, each checked.
    const auto* list = std::get_if<std::vector<std::string>>(&v);
    const std::vector<std::string> items = list ? *list : std::vector{std::get<std::string>(v)};
    for (const auto& s : items)
      if (std::find(k.choices.begin(), k.choices.end(), s) == k.choices.end()) {
        std::string msg = "value " + (list ? "'" + s + "' in " + shown : shown) +
                          " is not one of " + core::join(k.choices, ", ");
        const std::string hint = core::nearest(s, k.choices);
        if (!hint.empty()) msg += "; did you mean '" + hint + "'?";
        throw InputError(msg);
      }
  }
  auto number = [&]() -> std::optional<double> {
    if (auto* i = std::get_if<std::int64_t>(&v)) return static_cast<double>(*i);
    if (auto* d = std::get_if<double>(&v)) return *d;
    return std::nullopt;
  };
  const auto x = number();
  if (x && k.min && *x < *k.min) {
    std::ostringstream os;
    os << "value " << shown << " is below the minimum " << *k.min;
    throw InputError(os.str());
  }
  if (x && k.max && k.max_exclusive && *x >= *k.max) {
    std::ostringstream os;
    os << "value " << shown << " is not below " << *k.max << " (expected a value < " << *k.max
       << ")";
    throw InputError(os.str());
  }
  if (x && k.max && *x > *k.max) {
    std::ostringstream os;
    os << "value " << shown << " is above the maximum " << *k.max;
    throw InputError(os.str());
  }
}

// Converts a YAML node to the key's type and stores it; `where` is "file:line: ".
void set_from_node(Config& c, const KeyInfo& k, const YAML::Node& node, const std::string& where) {
  auto fail = [&](const std::string& shown, const std::string& reason) {
    throw InputError(where + "key '" + k.key + "': value " + shown + " " + reason);
  };
  Value v;
  if (is_list(k.type)) {
    std::vector<Value> items;
    auto one = [&](const YAML::Node& n) {
      if (!n.IsScalar())
        fail("(a " + std::string(n.IsMap() ? "mapping" : "list") + ")",
             "is not a scalar (expected a " + type_name(k.type) + ")");
      try {
        items.push_back(parse_scalar(n.Scalar(), element_type(k.type)));
      } catch (const InputError& e) {
        fail("'" + n.Scalar() + "'", e.what());
      }
    };
    if (node.IsSequence()) {
      for (const auto& n : node) one(n);
    } else if (node.IsScalar()) {
      one(node);
    } else if (!node.IsNull()) {
      fail("(a mapping)", "is not a " + type_name(k.type));
    }
    v = make_list(k.type, items);
  } else {
    if (node.IsNull() && k.type == ValueType::string) {
      v = std::string();
    } else if (!node.IsScalar()) {
      fail(node.IsNull()  ? "(empty)"
           : node.IsMap() ? "(a mapping)"
                          : "(a list)",
           "is not a " + type_name(k.type));
    } else {
      try {
        v = parse_scalar(node.Scalar(), k.type);
      } catch (const InputError& e) {
        fail("'" + node.Scalar() + "'", e.what());
      }
    }
  }
  try {
    check_value(k, v, node.IsScalar() ? "'" + node.Scalar() + "'" : value_to_string(v));
  } catch (const InputError& e) {
    throw InputError(where + "key '" + k.key + "': " + e.what());
  }
  k.set(c, v);
}

std::string location(const std::string& origin, const YAML::Mark& mark) {
  if (mark.is_null()) return origin + ": ";
  return origin + ":" + std::to_string(mark.line + 1) + ": ";
}

void apply_map(Config& c, const YAML::Node& map, const std::string& prefix,
               const std::string& origin) {
  for (auto it = map.begin(); it != map.end(); ++it) {
    const YAML::Node key_node = it->first;
    const std::string where = location(origin, key_node.Mark());
    if (!key_node.IsScalar()) throw InputError(where + "a key must be a plain name");
    const std::string key = prefix.empty() ? key_node.Scalar() : prefix + "." + key_node.Scalar();
    if (const KeyInfo* k = find_key(key)) {
      set_from_node(c, *k, it->second, where);
    } else if (is_section(key)) {
      if (it->second.IsNull()) continue;  // an empty section
      if (!it->second.IsMap())
        throw InputError(where + "'" + key +
                         "' is a section: expected a mapping of its keys (e.g. " + key +
                         ":\\n  <key>: <value>)");
      apply_map(c, it->second, key, origin);
    } else {
      throw InputError(unknown_key_message(where, key));
    }
  }
}

}  // namespace

void apply_yaml(Config& config, const std::string& yaml_text, const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw InputError(origin + ":" + std::to_string(e.mark.line + 1) + ":" +
                     std::to_string(e.mark.column + 1) + ": invalid YAML: " + e.msg);
  }
  if (root.IsNull()) return;
  if (!root.IsMap())
    throw InputError(origin +
                     ": expected a mapping of sections (model:, data:, optim:, ...) at the top");
  apply_map(config, root, "", origin);
}

void apply_override(Config& config, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw InputError("--set '" + assignment + "': expected KEY=VALUE, e.g. --set optim.lr=0.001");
  const std::string key = core::trim(assignment.substr(0, eq));
  const std::string text = assignment.substr(eq + 1);
  const std::string where = "--set " + key + ": ";
  const KeyInfo* k = find_key(key);
  if (!k) throw InputError(unknown_key_message("--set: ", key));
  if (k->type == ValueType::string) {
    // Strings are taken as written, so shard patterns with braces need no quoting.
    YAML::Node n(text);
    set_from_node(config, *k, n, "--set: ");
    return;
  }
  YAML::Node n;
  try {
    n = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw InputError(where + "cannot parse value '" + text + "': " + e.msg);
  }
  if (n.IsNull()) n = YAML::Node(text);
  set_from_node(config, *k, n, "--set: ");
}

void check_required(const Config& config) {
  std::vector<std::string> missing;
  for (const auto& k : keys()) {
    if (!k.required) continue;
    const Value v = k.get(config);
    if (auto* s = std::get_if<std::string>(&v); s && s->empty())
      missing.push_back("'" + k.key + "' (" + k.help + ")");
  }
  if (!missing.empty())
    throw InputError("missing required key " + core::join(missing, ", ") +
                     ": set it in a config file or with --set KEY=VALUE");
}

AdamWDefaults adamw_defaults(const std::string& model_name) {
  std::string lower = model_name;
  for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (lower.find("vit") != std::string::npos) return {0.98, 1e-6};
  return {0.999, 1e-8};
}

void resolve_model_defaults(Config& c) {
  const auto d = adamw_defaults(c.model.name);
  if (c.optim.beta2 < 0) c.optim.beta2 = d.beta2;
  if (c.optim.eps < 0) c.optim.eps = d.eps;
}

Config load(const std::vector<std::string>& files, const std::vector<std::string>& overrides,
            bool required) {
  Config c;
  for (const auto& f : files) apply_yaml(c, core::read_file(f), f);
  for (const auto& o : overrides) apply_override(c, o);
  if (required) check_required(c);
  if (!c.model.name.empty()) resolve_model_defaults(c);
  return c;
}

std::string to_yaml(const Config& config) {
  std::ostringstream os;
  std::string section;
  for (const auto& k : keys()) {
    const auto dot = k.key.find('.');
    const std::string sec = k.key.substr(0, dot);
    if (sec != section) {
      os << sec << ":\n";
      section = sec;
    }
    os << "  " << k.key.substr(dot + 1) << ": " << value_to_string(k.get(config)) << "\n";
  }
  return core::redact_secrets(os.str());  // it goes into run folders and checkpoints
}

std::string describe_keys() {
  const Config defaults;
  std::ostringstream os;
  for (const auto& k : keys()) {
    os << k.key << " (" << type_name(k.type);
    if (k.required)
      os << ", required";
    else
      os << ", default " << value_to_string(k.get(defaults));
    os << ")";
    if (!k.choices.empty()) os << " {" << core::join(k.choices, ", ") << "}";
    os << "\n    " << k.help << "\n";
  }
  return os.str();
}

}  // namespace clipper::config
