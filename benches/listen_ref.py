"""Reference side of benches/listen.rs: faster-whisper (CTranslate2) on the same Whisper weights.

Usage: listen_ref.py MODEL_DIR WAV... [--threads 1] [--runs 5]
MODEL_DIR holds model.bin, config.json, tokenizer.json (the bench writes vocabulary.txt beside them
from tokenizer.json, as CTranslate2 wants one). Greedy (beam 1, temperature 0), no timestamps, no VAD,
float32 on the CPU, so the decoding matches idol's. Prints one JSON line per WAV:
{"wav", "text", "seconds"} with the median wall time of `runs` transcriptions after one warm-up.
"""
import argparse
import json
import statistics
import sys
import time
import wave

import numpy as np
from faster_whisper import WhisperModel


def read_wav(path):
    with wave.open(path) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1 and w.getframerate() == 16000, path
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("wavs", nargs="+")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    model = WhisperModel(a.model, device="cpu", compute_type="float32", cpu_threads=a.threads, num_workers=1)
    opts = dict(beam_size=1, best_of=1, temperature=0.0, without_timestamps=True,
                condition_on_previous_text=False, vad_filter=False, language="en")

    def once(audio):
        segments, _ = model.transcribe(audio, **opts)
        return "".join(s.text for s in segments).strip()

    for path in a.wavs:
        audio = read_wav(path)
        text = once(audio)
        times = []
        for _ in range(a.runs):
            t = time.perf_counter()
            once(audio)
            times.append(time.perf_counter() - t)
        print(json.dumps({"wav": path, "text": text, "seconds": statistics.median(times)}))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
