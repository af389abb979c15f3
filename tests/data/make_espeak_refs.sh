#!/usr/bin/env bash
# Regenerates the espeak-ng reference IPA for the phonemizer agreement test.
#
# For each text (dev_text.txt, dev2_text.txt, dev3_text.txt: tuned on; heldout_text.txt: never tuned on) it writes <name>_refs.tsv with one
# line per sentence: the sentence as written, a TAB, then espeak-ng's en-us IPA for it with its clause line
# breaks joined by spaces and zero-width joiners removed. The texts hold only plain words and punctuation, so
# idol's text normalization leaves them as they are and both sides see the same words.
#
# Usage: tests/data/make_espeak_refs.sh   (needs espeak-ng; records its version in espeak_version.txt)
set -euo pipefail
cd "$(dirname "$0")"
espeak-ng --version > espeak_version.txt
for name in dev dev2 dev3 heldout; do
    out="${name}_refs.tsv"
    : > "$out"
    # One sentence per line: split after . ! ? followed by a space, drop blank lines.
    tr '\n' ' ' < "${name}_text.txt" | sed -E 's/([.!?]) +/\1\n/g' | sed -E 's/^ +//; s/ +$//' | grep -v '^$' |
    while IFS= read -r sentence; do
        ipa=$(espeak-ng -q --ipa -v en-us -- "$sentence" | tr '\n' ' ' | sed -E 's/\xe2\x80\x8d//g; s/ +/ /g; s/^ //; s/ $//')
        printf '%s\t%s\n' "$sentence" "$ipa" >> "$out"
    done
done
