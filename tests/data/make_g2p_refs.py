"""Reference ARPAbet from the original g2p-en 2.1.0 network, for words idol's dictionary lacks.

Runs g2p-en's own `G2p.predict` (numpy only; nltk is stubbed out because `predict` does not use it)
on tests/data/g2p_words.txt and writes tests/data/g2p_refs.tsv (word TAB ARPAbet).

Usage: pip download --no-deps g2p-en==2.1.0 && unzip it so that g2p_en/ is importable, install numpy,
then: G2P_EN_DIR=<dir containing g2p_en> G2P_WEIGHTS=models/checkpoint20.npz python3 tests/data/make_g2p_refs.py
"""
import os
import sys
import types

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ["G2P_EN_DIR"])
# g2p_en/__init__ imports nltk and downloads corpora at import time; predict() needs neither.
nltk = types.ModuleType("nltk")
nltk.pos_tag = None
nltk.data = types.SimpleNamespace(find=lambda *_: True)
nltk.download = lambda *_: None
corpus = types.ModuleType("nltk.corpus")
corpus.cmudict = None
tokenize = types.ModuleType("nltk.tokenize")
tokenize.TweetTokenizer = lambda: types.SimpleNamespace(tokenize=None)
sys.modules.update({"nltk": nltk, "nltk.corpus": corpus, "nltk.tokenize": tokenize})
inflect = types.ModuleType("inflect")
inflect.engine = lambda: None
sys.modules["inflect"] = inflect

from g2p_en import g2p as g2p_module  # noqa: E402

import numpy as np  # noqa: E402

model = g2p_module.G2p.__new__(g2p_module.G2p)
model.graphemes = ["<pad>", "<unk>", "</s>"] + list("abcdefghijklmnopqrstuvwxyz")
# The phoneme vocabulary exactly as G2p.__init__ writes it, read from its source (running __init__ would
# need nltk's cmudict).
init_src = open(g2p_module.__file__).read()
start = init_src.index('self.phonemes = ["<pad>"')
end = init_src.index("]", init_src.index("'ZH'")) + 1
ns = {}
exec("phonemes = " + init_src[start + len("self.phonemes = "):end], ns)
model.phonemes = ns["phonemes"]
model.g2idx = {g: i for i, g in enumerate(model.graphemes)}
model.idx2g = {i: g for i, g in enumerate(model.graphemes)}
model.p2idx = {p: i for i, p in enumerate(model.phonemes)}
model.idx2p = {i: p for i, p in enumerate(model.phonemes)}
weights = os.environ.get("G2P_WEIGHTS")
if weights:
    model.variables = np.load(weights)
    for k in model.variables.files:
        setattr(model, k, model.variables[k])
else:
    model.load_variables()

with open(os.path.join(here, "g2p_words.txt")) as f, open(os.path.join(here, "g2p_refs.tsv"), "w") as out:
    for word in f.read().split():
        out.write(f"{word}\t{' '.join(model.predict(word))}\n")
