"""Speed and size of the ONNX modules, at the module level; writes docs/benchmarks.md "ONNX modules".

    .venv/bin/python bench/onnx_modules.py [--runs N]

* audio.vad on a 60 s clip vs a bare loop of ``session.run`` over the same 32 ms chunks;
* text.embed with 32 concurrent callers, batched vs unbatched, and the per-call overhead
  of one caller over a bare ``session.run`` of the same tokens;
* image.ocr on a page-sized image vs the bare rapidocr call;
* RSS with all the models loaded and the load time with the ONNX conversion cached
  (measured in a fresh process).

Capabilities are called through BoundCapability.invoke (schema checks included) with a
real ModuleRuntime and thread pool, as the hub calls them; the HTTP door is not timed here.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import datetime
import io
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import write_section
from modules.builtin.embed import EmbedModule
from modules.builtin.ocr import OcrModule
from modules.builtin.summarize import SummarizeModule
from modules.builtin.vad import VadModule
from modules.sdk import Call, Module, ModuleRuntime

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def runtime(executor: concurrent.futures.Executor, state: Path, **options: Any) -> ModuleRuntime:
    return ModuleRuntime(executor=executor, state_dir=state, options=options,
                         logger=logging.getLogger("bench"), onnx_providers=(), threads=0)


def invoker(module: Module, action: str) -> Callable[[dict[str, Any]], Awaitable[Any]]:
    bound = next(c for c in module.capabilities() if c.spec.action == action)
    return lambda payload: bound.invoke(payload, Call(id="b", action=action))


def wav16k(seconds: float) -> bytes:
    """Speech (espeak-ng, else noise bursts) and pauses, 16 kHz PCM16 mono."""
    from modules.audio_input import resample

    rng = np.random.default_rng(7)
    pieces: list[np.ndarray] = []
    total = int(seconds * 16000)
    phrase = None
    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "p.wav"
            subprocess.run(["espeak-ng", "-w", str(out), "The edge hub listens for speech between the pauses."],
                           check=True, capture_output=True)
            with wave.open(str(out)) as w:
                raw = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
                phrase = resample(raw, w.getframerate())[0]
    while sum(len(p) for p in pieces) < total:
        pieces.append(np.zeros(int(16000 * rng.uniform(0.5, 2.0)), np.float32))
        pieces.append(phrase if phrase is not None else rng.normal(0, 0.2, 32000).astype(np.float32))
    pcm = (np.clip(np.concatenate(pieces)[:total], -1, 1) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def page_png() -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (1240, 1754), "white")  # A4 at 150 dpi
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(FONT, 30) if Path(FONT).is_file() else ImageFont.load_default(size=30)
    for i in range(24):
        draw.text((90, 100 + i * 64), f"Line {i + 1}: the edge hub reads invoices, receipts and letters.",
                  font=font, fill="black")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


# -- audio.vad ------------------------------------------------------------------------------
def bare_vad_loop(session: Any, samples: np.ndarray) -> float:
    """What a caller would write by hand: split, prepend context, run, carry the state."""
    start = time.perf_counter()
    win, ctx_len = 512, 64
    n = -(-len(samples) // win)
    padded = np.zeros(n * win, np.float32)
    padded[: len(samples)] = samples
    chunks = padded.reshape(n, win)
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros(ctx_len, np.float32)
    sr = np.array(16000, np.int64)
    for chunk in chunks:
        x = np.concatenate([context, chunk])[None, :]
        _, state = session.run(None, {"input": x, "state": state, "sr": sr})
        context = x[0, -ctx_len:]
    return time.perf_counter() - start


async def bench_vad(vad: VadModule, runs: int) -> dict[str, Any]:
    clip = wav16k(60.0)
    payload = {"audio": base64.b64encode(clip).decode()}
    with wave.open(io.BytesIO(clip)) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    assert vad._session is not None
    session = vad._session.session
    invoke = invoker(vad, "audio.vad")
    await invoke(payload)
    hub, bare = [], []
    loop = asyncio.get_running_loop()
    for _ in range(runs):  # interleaved, so drift from the shared box hits both alike
        hub.append(await timed(lambda: invoke(payload)))
        bare.append(await loop.run_in_executor(None, bare_vad_loop, session, samples))
    result = await invoke(payload)
    return {"hub_ms": median_ms(hub), "bare_ms": median_ms(bare), "ratio": statistics.median(hub) /
            statistics.median(bare), "segments": len(result["segments"]), "chunks": -(-len(samples) // 512)}


# -- text.embed -----------------------------------------------------------------------------
SENTENCES = [f"Caller {i} asks the hub about {topic} in a short sentence."
             for i, topic in enumerate(["the weather", "invoices", "speech", "billing", "peers", "models",
                                        "receipts", "latency"] * 4)]


async def throughput(module: EmbedModule, callers: int, calls_each: int) -> float:
    invoke = invoker(module, "text.embed")

    async def caller(i: int) -> None:
        for k in range(calls_each):
            await invoke({"text": SENTENCES[(i + k) % len(SENTENCES)]})

    start = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    return callers * calls_each / (time.perf_counter() - start)


async def bench_embed(batched: EmbedModule, unbatched: EmbedModule, runs: int) -> dict[str, Any]:
    await throughput(batched, 32, 2)
    await throughput(unbatched, 32, 2)
    b_rates, u_rates = [], []
    for _ in range(runs):
        b_rates.append(await throughput(batched, 32, 8))
        u_rates.append(await throughput(unbatched, 32, 8))
    stats = batched.describe()["batching"]  # the concurrent runs only, before the lone caller's
    # per-call overhead: one caller, the same sentence, module vs bare session.run of its tokens
    assert batched._embedder is not None
    session = batched._embedder.session.session
    text = SENTENCES[1]
    enc = batched._embedder._tokenizer.encode(text)
    feeds = {"input_ids": np.array([enc.ids], np.int64), "attention_mask": np.ones((1, len(enc.ids)), np.int64)}
    invoke = invoker(batched, "text.embed")
    hub, bare = [], []
    for _ in range(300):
        hub.append(await timed(lambda: invoke({"text": text})))
        start = time.perf_counter()
        session.run(None, feeds)
        bare.append(time.perf_counter() - start)
    return {"batched": statistics.median(b_rates), "unbatched": statistics.median(u_rates),
            "speedup": statistics.median(b_rates) / statistics.median(u_rates),
            "hub_ms": median_ms(hub), "bare_ms": median_ms(bare), "overhead_ms": median_ms(hub) - median_ms(bare),
            "stats": stats}


# -- image.ocr ------------------------------------------------------------------------------
async def bench_ocr(ocr: OcrModule, runs: int) -> dict[str, Any]:
    from rapidocr_onnxruntime import RapidOCR

    png = page_png()
    payload = {"image": base64.b64encode(png).decode()}
    bare_engine = RapidOCR(text_score=0.0)  # the hub's own settings (modules/ocr_engine.py)
    invoke = invoker(ocr, "image.ocr")
    lines = len((await invoke(payload))["lines"])
    bare_engine(png)
    loop = asyncio.get_running_loop()
    hub, bare = [], []
    for _ in range(runs):
        hub.append(await timed(lambda: invoke(payload)))
        start = time.perf_counter()
        await loop.run_in_executor(None, bare_engine, png)
        bare.append(time.perf_counter() - start)
    return {"hub_ms": median_ms(hub), "bare_ms": median_ms(bare),
            "ratio": statistics.median(hub) / statistics.median(bare), "lines": lines}


# -- size and load time (fresh process) ------------------------------------------------------
def rss_mb() -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def load_probe(state: Path) -> None:
    """Run in a fresh interpreter (imports done at the top): start the four ONNX modules, report."""
    t1 = time.perf_counter()

    async def start_all() -> list[Module]:
        pool = concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1)
        started: list[Module] = []
        for cls in (VadModule, OcrModule, EmbedModule, SummarizeModule):
            module = cls()
            await module.start(runtime(pool, state))
            started.append(module)
        return started

    loop = asyncio.new_event_loop()
    started = loop.run_until_complete(start_all())
    t2 = time.perf_counter()
    rss, peak = rss_mb()
    print(json.dumps({"start_s": t2 - t1, "rss_mb": rss, "peak_mb": peak,
                      "provider": started[0].describe()["provider"]}))


def probe(state: Path) -> dict[str, Any]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--load-probe", str(state)], check=True,
                         capture_output=True, text=True)
    facts = dict(json.loads(out.stdout.strip().splitlines()[-1]))
    facts["process_s"] = time.perf_counter() - start  # interpreter + imports + start, to exit
    return facts


# -- report ---------------------------------------------------------------------------------
def markdown(vad: dict[str, Any], emb: dict[str, Any], ocr: dict[str, Any], size: dict[str, Any],
             runs: int) -> str:
    env = (f"CPython {platform.python_version()}, {os.cpu_count()} CPUs, onnxruntime "
           f"{__import__('onnxruntime').__version__}, provider {size['provider']}, "
           f"measured {datetime.date.today().isoformat()}")
    ok = lambda good: "met" if good else "**missed**"  # noqa: E731
    return f"""
## ONNX modules

`bench/onnx_modules.py`, at the module level: each capability is called through
`BoundCapability.invoke` (JSON Schema checks, base64 decoding, the thread pool) with a real
`ModuleRuntime`, as the hub's pipeline calls it; the HTTP door is not in these figures.
Medians of {runs} runs; {env}. The box is shared (load average {os.getloadavg()[0]:.1f} at the end of
this run), so figures move by ±20 % or more between runs; ratios are interleaved runs and hold better.

| | hub module | bare | ratio | target |
|---|---:|---:|---:|---|
| audio.vad, 60 s clip at 16 kHz ({vad['chunks']} chunks of 32 ms, {vad['segments']} segments) | \
{vad['hub_ms']:.0f} ms | {vad['bare_ms']:.0f} ms (`session.run` loop) | {vad['ratio']:.2f}x | \
<= 1.15x: {ok(vad['ratio'] <= 1.15)} |
| image.ocr, 1240x1754 page, {ocr['lines']} lines | {ocr['hub_ms']:.0f} ms | \
{ocr['bare_ms']:.0f} ms (`RapidOCR(text_score=0.0)(png)`, the hub's settings) | {ocr['ratio']:.2f}x | |
| text.embed, one caller, one sentence | {emb['hub_ms']:.2f} ms | {emb['bare_ms']:.2f} ms (`session.run`) | \
+{emb['overhead_ms']:.2f} ms | < 2 ms overhead: {ok(emb['overhead_ms'] < 2)} |

text.embed with 32 concurrent callers (8 calls each, one sentence a call):

| | calls/s |
|---|---:|
| dynamic batching (max_batch 32, max_delay_ms 2) | {emb['batched']:.0f} |
| unbatched (max_batch 1) | {emb['unbatched']:.0f} |
| speedup | {emb['speedup']:.1f}x (target >= 2x: {ok(emb['speedup'] >= 2)}) |

Batches formed in the concurrent runs: {emb['stats']['batches']} for {emb['stats']['items']} texts
(mean {emb['stats']['mean_size']}, largest {emb['stats']['largest']}).

Size and start, in a fresh process with audio.vad, image.ocr, text.embed and text.summarize
started (the embedding conversion already cached; summarize shares text.embed's session):

| | measured | target |
|---|---:|---|
| RSS with all models loaded | {size['rss_mb']:.0f} MB (peak {size['peak_mb']:.0f} MB) | \
< 500 MB: {ok(size['rss_mb'] < 500)} |
| load time: start() of the four modules | {size['start_s']:.2f} s | < 3 s: {ok(size['start_s'] < 3)} |
| the whole fresh process: interpreter, imports (onnxruntime, OpenCV, tokenizers), start, exit | \
{size['process_s']:.2f} s | |

The first start converts all-MiniLM-L6-v2 from safetensors to ONNX (about 2 s here) and
caches it under `<state_dir>/models`. GPU: no figures yet — the session that wrote this had
no GPU machine; `make test-gpu` checks that every session really runs on CUDAExecutionProvider,
and this script prints the provider it ran on, so a GPU run fills a column beside these.
"""


async def run(args: argparse.Namespace) -> None:
    state = Path(tempfile.mkdtemp(prefix="bench-onnx-"))
    pool = concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1)
    vad, ocr, batched, unbatched = VadModule(), OcrModule(), EmbedModule(), EmbedModule()
    await vad.start(runtime(pool, state))
    await ocr.start(runtime(pool, state))
    await batched.start(runtime(pool, state))
    await unbatched.start(runtime(pool, state, max_batch=1))
    try:
        vad_r = await bench_vad(vad, args.runs)
        print("vad", vad_r, flush=True)
        emb_r = await bench_embed(batched, unbatched, args.runs)
        print("embed", emb_r, flush=True)
        ocr_r = await bench_ocr(ocr, max(3, args.runs // 2))
        print("ocr", ocr_r, flush=True)
    finally:
        for module in (vad, ocr, batched, unbatched):
            await module.stop()
        pool.shutdown()
    size = probe(state)
    print("size", size, flush=True)
    shutil.rmtree(state, ignore_errors=True)
    if not args.no_write:
        write_section("onnx-modules", markdown(vad_r, emb_r, ocr_r, size, args.runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--load-probe", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.load_probe:
        load_probe(args.load_probe)
        return
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
