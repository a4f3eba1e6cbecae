// The special tokens of an "hf:" folder: which ids surround the text, the pad id and side, which
// strings are added tokens. The rules are transformers 5.24's (T5Tokenizer, GemmaTokenizer and
// TokenizersBackend), which open_clip 3.3.0's HFTokenizer runs.
#include "hf_special.hpp"

#include <algorithm>
#include <optional>
#include <vector>

#include "clipper/core/error.hpp"
#include "sp_proto.hpp"

namespace clipper::tokenizer::detail {
namespace {

using nlohmann::json;

// A token in the JSON: "text" or {"content": "text", ...} (an AddedToken); null: none.
std::optional<std::string> content_of(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  return std::nullopt;
}

// The token class defaults of transformers' T5Tokenizer and GemmaTokenizer __init__.
std::optional<std::string> class_default(HfKind kind, const std::string& key) {
  static const std::map<std::string, std::string> t5 = {
      {"eos_token", "</s>"}, {"unk_token", "<unk>"}, {"pad_token", "<pad>"}};
  static const std::map<std::string, std::string> gemma = {{"unk_token", "<unk>"},
                                                           {"bos_token", "<bos>"},
                                                           {"eos_token", "<eos>"},
                                                           {"pad_token", "<pad>"},
                                                           {"mask_token", "<mask>"}};
  const auto& m = kind == HfKind::t5 ? t5 : gemma;
  const auto it = m.find(key);
  return it == m.end() ? std::nullopt : std::optional<std::string>(it->second);
}

class Resolver {
 public:
  Resolver(const HfFolder& f, const sentencepiece::SentencePieceProcessor& sp) : f_(f), sp_(sp) {
    if (const auto d = f.config.find("added_tokens_decoder");
        d != f.config.end() && d->is_object()) {
      for (const auto& [id, tok] : d->items()) {
        const auto c = content_of(tok);
        if (!c) continue;
        try {
          decoder_[*c] = std::stoll(id);
        } catch (const std::exception&) {
          throw core::InputError(where() + ": added_tokens_decoder key '" + id +
                                 "' is not a token id");
        }
      }
    }
  }

  std::string where() const { return f_.dir + "/tokenizer_config.json"; }

  // tokenizer_config.json's KEY, else special_tokens_map.json's, else the class default; an
  // explicit null means none.
  std::optional<std::string> named(const std::string& key) const {
    for (const json* j : {&f_.config, &f_.special_map})
      if (const auto it = j->find(key); it != j->end()) return content_of(*it);
    return class_default(f_.kind, key);
  }

  std::int64_t id(const std::string& content) const {
    const int piece = sp_.PieceToId(content);
    if (sp_.IdToPiece(piece) == content) return piece;
    if (const auto it = decoder_.find(content); it != decoder_.end()) return it->second;
    throw core::InputError(where() + ": special token '" + content + "' is neither a piece of " +
                           f_.model_path + " nor listed in added_tokens_decoder");
  }

  std::int64_t required(const std::string& key, const std::string& why) const {
    const auto c = named(key);
    if (!c) throw core::InputError(where() + ": no " + key + " (" + why + ")");
    return id(*c);
  }

  const std::map<std::string, std::int64_t>& decoder() const { return decoder_; }

 private:
  const HfFolder& f_;
  const sentencepiece::SentencePieceProcessor& sp_;
  std::map<std::string, std::int64_t> decoder_;
};

void add_listed(const json& j, const char* key, const Resolver& r,
                std::map<std::string, std::int64_t>& out) {
  const auto it = j.find(key);
  if (it == j.end()) return;
  const auto add = [&](const json& v) {
    if (const auto c = content_of(v); c && !c->empty()) out[*c] = r.id(*c);
  };
  if (it->is_array() || it->is_object())
    for (const auto& v : *it) add(v);
}

std::map<std::string, std::int64_t> added_tokens(const HfFolder& f, const Resolver& r,
                                                 const sentencepiece::SentencePieceProcessor& sp) {
  std::map<std::string, std::int64_t> out;
  for (int i = 0; i < sp.GetPieceSize(); ++i)
    if (sp.IsControl(i) || sp.IsUnknown(i)) out[sp.IdToPiece(i)] = i;
  for (int i : user_defined_ids(sp.serialized_model_proto())) out[sp.IdToPiece(i)] = i;
  for (const auto& [content, id] : r.decoder()) out[content] = id;
  for (const char* key :
       {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"})
    if (const auto c = r.named(key); c && !c->empty()) out[*c] = r.id(*c);
  for (const json* j : {&f.config, &f.special_map}) {
    add_listed(*j, "additional_special_tokens", r, out);
    add_listed(*j, "extra_special_tokens", r, out);
  }
  return out;
}

// tokenizer.json's TemplateProcessing "single": the special ids before and after $A.
void template_ids(const json& pp, const std::string& file, HfSpecials& s) {
  if (pp.value("type", "") != "TemplateProcessing" || !pp.contains("single"))
    throw core::InputError(file + ": post_processor of type '" + pp.value("type", "?") +
                           "': the hf: tokenizer reads TemplateProcessing only");
  bool after = false;
  for (const auto& item : pp["single"]) {
    if (item.contains("Sequence")) {
      after = true;
      continue;
    }
    const std::string name = item.at("SpecialToken").at("id").get<std::string>();
    for (const auto& id : pp.at("special_tokens").at(name).at("ids"))
      (after ? s.suffix : s.prefix).push_back(id.get<std::int64_t>());
  }
}

void surrounding_ids(const HfFolder& f, const Resolver& r, HfSpecials& s) {
  if (f.kind == HfKind::t5) {  // T5Tokenizer always ends the text with eos_token, never starts
    s.suffix = {r.required("eos_token", "T5Tokenizer appends it")};
    return;
  }
  if (!f.post_processor.is_null()) {  // GemmaTokenizer with tokenizer.json: its template
    try {
      template_ids(f.post_processor, f.tokenizer_json, s);
    } catch (const json::exception& e) {
      throw core::InputError(f.tokenizer_json + ": post_processor unreadable (" + e.what() + ")");
    }
    return;
  }
  // Without tokenizer.json: add_bos_token / add_eos_token, false when absent.
  if (f.config.value("add_bos_token", false))
    s.prefix = {r.required("bos_token", "add_bos_token is true")};
  if (f.config.value("add_eos_token", false))
    s.suffix = {r.required("eos_token", "add_eos_token is true")};
}

bool left_side(const HfFolder& f, const char* key, bool dflt) {
  const auto it = f.config.find(key);
  if (it == f.config.end() || it->is_null()) return dflt;
  const std::string v = it->is_string() ? it->get<std::string>() : it->dump();
  if (v != "left" && v != "right")
    throw core::InputError(f.dir + "/tokenizer_config.json: " + key + " is '" + v +
                           "', expected left or right");
  return v == "left";
}

}  // namespace

HfSpecials read_hf_specials(const HfFolder& f, const sentencepiece::SentencePieceProcessor& sp) {
  const Resolver r(f, sp);
  HfSpecials s;
  try {
    s.added = added_tokens(f, r, sp);
    surrounding_ids(f, r, s);
    s.pad = r.required("pad_token", "open_clip pads every row to the context length");
    // transformers' class defaults: T5Tokenizer pads on the right, GemmaTokenizer on the left.
    s.pad_left = left_side(f, "padding_side", f.kind == HfKind::gemma);
    s.truncate_left = left_side(f, "truncation_side", false);
  } catch (const json::exception& e) {
    throw core::InputError(r.where() + ": unexpected value (" + e.what() + ")");
  }
  s.vocab_size = sp.GetPieceSize();
  for (const auto& [c, id] : s.added) s.vocab_size = std::max(s.vocab_size, id + 1);
  for (auto id : s.prefix) s.vocab_size = std::max(s.vocab_size, id + 1);
  for (auto id : s.suffix) s.vocab_size = std::max(s.vocab_size, id + 1);
  s.vocab_size = std::max(s.vocab_size, s.pad + 1);
  return s;
}

}  // namespace clipper::tokenizer::detail
