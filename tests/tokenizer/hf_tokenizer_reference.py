"""Reference ids from open_clip's HFTokenizer on Hugging Face tokenizer folders built here.

Trains two tiny SentencePiece models on the captions, SigLIP's kind (T5: Unigram, pad 0, eos 1,
unk 2, nmt_nfkc, dummy prefix) and SigLIP 2's kind (Gemma: BPE, pad 0, eos 1, bos 2, unk 3,
identity normalization, no dummy prefix, byte fallback, split digits, user-defined pieces), makes
Hugging Face folders from them with transformers (T5Tokenizer / GemmaTokenizer .from_pretrained
on the .model, then save_pretrained), in two layouts each:
  <kind>-v5: what transformers 5 saves (tokenizer.json, tokenizer_config.json) and the .model;
  <kind>-hub: the files of the Hub's timm/ViT-B-16-SigLIP and timm/ViT-B-16-SigLIP2 (saved by
             transformers 4: tokenizer_config.json with added_tokens_decoder, the bos/eos flags
             and padding side, special_tokens_map.json, tokenizer.json, the .model),
then writes {"folders": {NAME: {"dir", "vocab_size", "rows": {"CLEAN/CONTEXT": [[ids]]}}}}: the
rows of HFTokenizer(dir, context_length=CONTEXT, clean=CLEAN)(captions) (open_clip 3.3.0), for
CLEAN canonicalize (SigLIP's configs) and whitespace (special-token literals survive it) and
CONTEXT 64 and 16.

    python hf_tokenizer_reference.py CAPTIONS.json WORKDIR OUT.json
"""
import importlib.util
import json
import os
import shutil
import sys

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2
from transformers import GemmaTokenizer, T5Tokenizer

# open_clip/tokenizer.py as it is, without the package's __init__ (which builds the model
# registry and takes seconds): the module has no relative imports.
_dir = importlib.util.find_spec("open_clip").submodule_search_locations[0]
_spec = importlib.util.spec_from_file_location("open_clip_tokenizer",
                                               os.path.join(_dir, "tokenizer.py"))
open_clip_tokenizer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(open_clip_tokenizer)
HFTokenizer = open_clip_tokenizer.HFTokenizer

captions_path, work, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
with open(captions_path, encoding="utf-8") as f:
    captions = json.load(f)
train_text = os.path.join(work, "train.txt")
with open(train_text, "w", encoding="utf-8") as f:
    for c in captions:
        line = " ".join(c.split())
        if line:
            f.write(line + "\n")
common = dict(input=train_text, character_coverage=0.995, minloglevel=2, num_threads=1,
              input_sentence_size=0, hard_vocab_limit=False)


def train_t5(d):
    spm.SentencePieceTrainer.train(model_prefix=os.path.join(d, "spiece"), vocab_size=500,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   **common)
    return os.path.join(d, "spiece.model")


def train_gemma(d):
    spm.SentencePieceTrainer.train(
        model_prefix=os.path.join(d, "tokenizer"), vocab_size=700, model_type="bpe",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
        bos_piece="<bos>", unk_piece="<unk>",
        user_defined_symbols=["<mask>", "<start_of_turn>", "<end_of_turn>", "\n", "\u2581\u2581",
                              "\u2581\u2581\u2581", "<unused0>"],
        normalization_rule_name="identity", add_dummy_prefix=False,
        remove_extra_whitespaces=False, byte_fallback=True, split_digits=True,
        allow_whitespace_only_pieces=True, **common)
    return os.path.join(d, "tokenizer.model")


def added_tokens_decoder(model):
    proto = sentencepiece_model_pb2.ModelProto()
    with open(model, "rb") as f:
        proto.ParseFromString(f.read())
    out = {}
    for i, p in enumerate(proto.pieces):
        if p.type in (p.CONTROL, p.UNKNOWN, p.USER_DEFINED):  # transformers 4 saved these
            out[str(i)] = {"content": p.piece, "lstrip": False, "normalized": False,
                           "rstrip": False, "single_word": False,
                           "special": p.type != p.USER_DEFINED}
    return out


def hub_layout(v5, hub, model, config, special):
    shutil.copytree(v5, hub)
    config = dict(config, added_tokens_decoder=added_tokens_decoder(model))
    with open(os.path.join(hub, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(hub, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(special, f, indent=2)


def build(kind):
    src = os.path.join(work, kind + "-spm")
    os.makedirs(src)
    v5, hub = os.path.join(work, kind + "-v5"), os.path.join(work, kind + "-hub")
    if kind == "t5":  # open_clip's SigLipTokenizer: T5TokenizerFast(extra_ids=0), pad = eos = 1
        model = train_t5(src)
        tok = T5Tokenizer.from_pretrained(src, extra_ids=0, legacy=False)
        tok.pad_token_id = 1
        tok.eos_token_id = 1
        config = {"additional_special_tokens": [], "clean_up_tokenization_spaces": True,
                  "eos_token": "</s>", "extra_ids": 0, "legacy": False, "model_max_length": 64,
                  "pad_token": "</s>", "sp_model_kwargs": {}, "tokenizer_class": "T5Tokenizer",
                  "unk_token": "<unk>"}
        special = {"eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"}
    else:  # open_clip's SigLipTokenizer('gemma'): padding right, no bos, eos appended, pad 0
        model = train_gemma(src)
        tok = GemmaTokenizer.from_pretrained(src, vocab_file=model, padding_side="right",
                                             add_bos_token=False, add_eos_token=True)
        tok.pad_token_id = 0
        tok.eos_token_id = 1
        config = {"add_bos_token": False, "add_eos_token": True, "bos_token": "<bos>",
                  "clean_up_tokenization_spaces": False, "eos_token": "<eos>",
                  "model_max_length": 64, "pad_token": "<pad>", "padding_side": "right",
                  "sp_model_kwargs": {}, "spaces_between_special_tokens": False,
                  "tokenizer_class": "GemmaTokenizer", "unk_token": "<unk>",
                  "use_default_system_prompt": False}
        special = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
                   "unk_token": "<unk>", "additional_special_tokens": ["<start_of_turn>",
                                                                      "<end_of_turn>"]}
    tok.save_pretrained(v5)
    shutil.copy(model, v5)  # transformers 5 saves no .model; the Hub's folders have it
    hub_layout(v5, hub, model, config, special)
    if kind == "gemma":
        return {kind + "-v5": v5, kind + "-hub": hub}
    v4 = os.path.join(work, "t5-v4")
    t5_v4_pipeline(hub, v4)
    return {"t5-v5": v5, "t5-hub": hub, "t5-v4": v4}


def t5_v4_pipeline(hub, v4):
    """The Hub layout with the tokenizer.json pipeline transformers 4 wrote for T5 (legacy=False):
    Precompiled then Replace(" {2,}", " "), and Metaspace alone with prepend_scheme "first"."""
    shutil.copytree(hub, v4)
    path = os.path.join(v4, "tokenizer.json")
    with open(path, encoding="utf-8") as f:
        j = json.load(f)
    j["normalizer"] = {"type": "Sequence", "normalizers": [
        j["normalizer"], {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]}
    j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581",
                          "prepend_scheme": "first", "split": True}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(j, f)


# Every clean/context pair on the Hub's layout; two of them on transformers 5's own; one on the
# transformers 4 T5 pipeline.
combos = {"hub": [("canonicalize", 64), ("canonicalize", 16), ("whitespace", 64),
                  ("whitespace", 16)],
          "v5": [("canonicalize", 64), ("whitespace", 16)],
          "v4": [("whitespace", 64)]}
folders = {}
for kind in ("t5", "gemma"):
    for name, d in build(kind).items():
        entry = {"dir": d, "rows": {}}
        for clean, context in combos[name.split("-")[1]]:
            tok = HFTokenizer(d, context_length=context, clean=clean)
            entry["vocab_size"] = len(tok.tokenizer)
            entry["rows"][f"{clean}/{context}"] = tok(captions).tolist()
        folders[name] = entry
with open(out_path, "w", encoding="utf-8") as f:
    f.write(json.dumps({"folders": folders}))
