"""Reference ids from the real open_clip: reads a JSON list of captions and writes
{"rows": [...], "assigned": [...], "unicode": "..."}: the rows of open_clip.tokenize(captions,
context_length) without their trailing zeros, and whether every character of each caption is
assigned in the Unicode version of this Python (unicodedata.unidata_version).

    python open_clip_tokenize.py CAPTIONS.json CONTEXT_LENGTH OUT.json
"""
import json
import sys
import unicodedata

import open_clip

captions_path, context_length, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(captions_path, encoding="utf-8") as f:
    captions = json.load(f)
rows = []
for i in range(0, len(captions), 1024):
    for row in open_clip.tokenize(captions[i:i + 1024], context_length=context_length).tolist():
        while row and row[-1] == 0:
            row.pop()
        rows.append(row)
assigned = [all(unicodedata.category(ch) != "Cn" for ch in c) for c in captions]
with open(out_path, "w", encoding="utf-8") as f:
    json.dump({"rows": rows, "assigned": assigned, "unicode": unicodedata.unidata_version}, f)
