"""audio.vad on a 60 s clip through `POST /v1/call` of a real hub, beside a bare onnxruntime
`session.run` loop over the same 32 ms chunks, in the same run (target: hub within 1.15x).

    .venv/bin/python bench/vad_http.py [--runs 5]

The hub is a `democratic-ai serve` subprocess with only audio.vad; the bare loop runs in this
process on its own InferenceSession of the same model file with the same thread count.
Writes the section "vad-http" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import wave
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.onnx_modules import bare_vad_loop, wav16k  # noqa: E402
from bench.report import write_section  # noqa: E402
from modules.silero import shipped_model  # noqa: E402


def start_hub(state: Path) -> subprocess.Popen[bytes]:
    config = state / "hub.toml"
    config.write_text('[http]\nlisten = "127.0.0.1:0"\n[http3]\nenabled = false\n[grpc]\nenabled = false\n'
                      '[mdns]\nenabled = false\n[log]\nlevel = "WARNING"\n[modules]\nenabled = ["audio.vad"]\n')
    hub = subprocess.Popen([sys.executable, "-m", "daemon.cli", "serve", "--config", str(config),
                            "--state-dir", str(state)], cwd=ROOT, stderr=subprocess.DEVNULL)
    for _ in range(600):
        if (state / "endpoints.json").exists():
            return hub
        time.sleep(0.05)
    hub.kill()
    raise SystemExit("the hub did not start")


def post(url: str, key: str, body: bytes) -> dict:
    request = urllib.request.Request(f"{url}/v1/call", data=body, method="POST",
                                     headers={"X-API-Key": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as resp:
        return json.loads(resp.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    clip = wav16k(60.0)
    with wave.open(io.BytesIO(clip)) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(shipped_model().path), options, providers=["CPUExecutionProvider"])
    body = json.dumps({"action": "audio.vad", "payload": {"audio": base64.b64encode(clip).decode()}}).encode()
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        hub = start_hub(state)
        try:
            url = json.loads((state / "endpoints.json").read_text())["http"]
            key = (state / "bootstrap-admin.key").read_text().strip()
            segments = len(post(url, key, body)["result"]["segments"])  # warm
            bare_vad_loop(session, samples)
            hub_s, bare_s = [], []
            for _ in range(args.runs):  # interleaved: drift on a shared box hits both alike
                started = time.perf_counter()
                post(url, key, body)
                hub_s.append(time.perf_counter() - started)
                bare_s.append(bare_vad_loop(session, samples))
                print(f"hub {hub_s[-1] * 1000:.0f} ms, bare {bare_s[-1] * 1000:.0f} ms", flush=True)
        finally:
            hub.terminate()
            hub.wait(30)
    hub_ms, bare_ms = statistics.median(hub_s) * 1000, statistics.median(bare_s) * 1000
    ratio = hub_ms / bare_ms
    write_section("vad-http", f"""## audio.vad through `POST /v1/call` (bench/vad_http.py)

A 60 s clip (16 kHz PCM16 WAV, {len(clip) // 1024} KiB, base64 in the JSON body) posted to a real hub,
against a bare loop of onnxruntime `session.run` over the same 1875 chunks of 32 ms in one process.
Medians of {args.runs} interleaved runs; CPython {platform.python_version()}, {os.cpu_count()} CPUs,
onnxruntime {ort.__version__}, CPUExecutionProvider, {time.strftime('%Y-%m-%d')}.

| | ms (median) |
|---|---:|
| hub: HTTP + auth + base64/WAV decode + VAD + ledger entry | {hub_ms:.0f} |
| bare `session.run` loop | {bare_ms:.0f} |
| ratio | **{ratio:.2f}x** (target ≤ 1.15x: {'met' if ratio <= 1.15 else 'not met'}) |

Segments found: {segments}.
""")
    print(f"hub {hub_ms:.0f} ms, bare {bare_ms:.0f} ms, ratio {ratio:.2f}x")


if __name__ == "__main__":
    main()
