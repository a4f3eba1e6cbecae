#pragma once
// Every configuration key, declared once: its dotted name, type, help, allowed values, whether it
// is required, and how to read and write it in a Config. The default is the Config field's
// initializer (config.hpp).
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "clipper/config/config.hpp"

namespace clipper::config {

enum class ValueType { boolean, integer, number, string, string_list, integer_list, number_list };

using Value = std::variant<bool, std::int64_t, double, std::string, std::vector<std::string>,
                           std::vector<std::int64_t>, std::vector<double>>;

struct KeyInfo {
  std::string key;  // "optim.lr"
  ValueType type = ValueType::string;
  std::string help;
  std::vector<std::string> choices;  // allowed values of a string key; empty: any
  std::optional<double> min;         // lower bound of a numeric key (inclusive)
  std::optional<double> max;         // upper bound of a numeric key (inclusive)
  bool max_exclusive = false;        // max itself is not allowed
  bool required = false;
  std::function<void(Config&, const Value&)> set;
  std::function<Value(const Config&)> get;
};

// All keys in declaration order (sections in the order of Config's members).
const std::vector<KeyInfo>& keys();
// The key named `key`, or nullptr.
const KeyInfo* find_key(const std::string& key);
// "bool", "int", "float", "string", "list of strings", ...
std::string type_name(ValueType type);
// The value as it is written in YAML ("0.0005", "[a, b]", "\"\"").
std::string value_to_string(const Value& value);

}  // namespace clipper::config
