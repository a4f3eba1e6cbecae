"""Reference ids from the real open_clip: reads a JSON list of captions, writes a JSON list of
rows (open_clip.tokenize(captions, context_length)).

    python open_clip_tokenize.py CAPTIONS.json CONTEXT_LENGTH OUT.json
"""
import json
import sys

import open_clip

captions_path, context_length, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(captions_path, encoding="utf-8") as f:
    captions = json.load(f)
rows = []
for i in range(0, len(captions), 256):
    rows.extend(open_clip.tokenize(captions[i:i + 256], context_length=context_length).tolist())
with open(out_path, "w", encoding="utf-8") as f:
    json.dump(rows, f)
