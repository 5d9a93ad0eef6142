"""The microphone page in a real browser: headless Chromium plays a WAV file as its fake microphone into the
page served by `swa-stream serve`, driven over the DevTools protocol with a real mouse click on Start.

The page must show the same final transcript as `swa-stream transcribe` on that file, and the audio the server
received (its --record copy, at the page's AudioContext rate) must match the file: normalised
cross-correlation >= 0.99 against the file resampled to that rate, after a global lag either way and any
number of inserted 10 ms buffers (see aligned_correlation). Where Chromium is missing the test is skipped,
saying so.
"""

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile as sf
import torch

from swa_stream.pipelines.cli import main
from swa_stream.tasks.asr.audio import resample

EXAMPLE = Path(__file__).parents[2] / "pipelines" / "examples" / "asr_demo.wav"
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (make test's system step installs "
                                "Debian's chromium where root and apt allow)")


@pytest.fixture
def wav(tmp_path):
    """16-bit PCM (an ADPCM file is captured as silence), ending in 300 ms of digital silence (Chromium repeats
    the last 10 ms buffer once the file is over)."""
    audio, rate = sf.read(EXAMPLE, dtype="int16")
    audio = np.concatenate([audio, np.zeros(int(0.3 * rate), np.int16)])
    path = tmp_path / "speech.wav"
    sf.write(path, audio, rate, subtype="PCM_16")
    return path, audio, rate


def transcribe_texts(path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["transcribe", str(path), "--format", "jsonl"]) == 0
    return [r["text"] for r in map(json.loads, out.getvalue().splitlines()) if r["type"] == "final"]


@contextlib.contextmanager
def process(args, **kw):
    proc = subprocess.Popen(args, **kw)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for(what, check, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class DevTools:
    """The DevTools protocol over aiohttp's websocket client (no Origin header: Chromium refuses foreign ones)."""

    def __init__(self, ws):
        self.ws, self.ids = ws, iter(range(1, 10**9))

    async def call(self, method, **params):
        i = next(self.ids)
        await self.ws.send_json({"id": i, "method": method, "params": params})
        while True:
            msg = json.loads((await self.ws.receive(timeout=30)).data)
            if msg.get("id") == i:
                assert "error" not in msg, msg
                return msg["result"]

    async def js(self, expression):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def click(self, element_id):
        """A real mouse press and release on the element's centre: a script click() does not unlock audio."""
        box = await self.js(f"JSON.stringify(document.getElementById('{element_id}').getBoundingClientRect())")
        box = json.loads(box)
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        for kind in ("mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    async def until(self, what, expression, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await self.js(expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}: status {await self.js(STATUS)!r}")


STATUS = "document.getElementById('status').textContent"


@contextlib.asynccontextmanager
async def open_page(profile, page_url):
    """DevTools on the browser's tab, once our page has loaded (before that the tab shows about:blank)."""
    devtools_port = int((profile / "DevToolsActivePort").read_text().split()[0])
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{devtools_port}/json/list") as r:
            targets = await r.json()
        target = next(t for t in targets if t["type"] == "page" and t["url"].startswith(page_url))
        async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            dt = DevTools(ws)
            await dt.until("the page", f"location.href === '{page_url}' && document.readyState === 'complete' "
                           "&& !!document.getElementById('start')", 30)
            yield dt


async def drive_page(profile, page_url, seconds, kill_server):
    async with open_page(profile, page_url) as dt:
        await dt.click("start")
        status = await dt.until("listening", f"{STATUS}.startsWith('listening') || "
                                f"document.getElementById('status').className === 'error' ? {STATUS} : ''", 30)
        assert status.startswith("listening"), status
        partials, end = set(), time.monotonic() + seconds + 1.0  # the fake microphone plays in real time
        while time.monotonic() < end:
            partials.add(await dt.js("document.getElementById('partial').textContent"))
            await asyncio.sleep(0.1)
        assert partials - {""}, "live partials appear while the audio plays"
        await dt.click("stop")
        status = await dt.until("done", f"['done'].includes({STATUS}) || "
                                f"document.getElementById('status').className === 'error' ? {STATUS} : ''", 30)
        texts = await dt.js("[...document.querySelectorAll('#finals .text')].map(e => e.textContent)")
        words = await dt.js("[...document.querySelectorAll('#finals .words')].map(e => e.textContent)")
        # then the socket drops mid-stream: the page says so
        await dt.click("start")
        await dt.until("listening again", f"{STATUS}.startsWith('listening')", 30)
        kill_server()
        lost = await dt.until("the error state", f"document.getElementById('status').className === 'error' "
                              f"? {STATUS} : ''", 30)
        return status, texts, words, lost


def aligned_correlation(reference, received, buffer):
    """Normalised correlation of `reference` with `received`, after aligning them as a real-time capture
    can differ: a global lag either way (the page starts late; or its capture starts a few samples into the
    file, as one make test run's did, 57 samples in), and whole buffers of `buffer` samples inserted anywhere
    (a capture starved of CPU, as under a loaded test run, inserts some). The samples
    between them must be the file's. The alignment is the monotone one, found by dynamic programming over
    `buffer`-long blocks, that maximises the summed products: each block may start at most one buffer later
    than the one before. (Letting blocks also start earlier, for lost buffers, lets the path chase loud
    blocks and lowers the correlation of an exact copy.)"""
    n = len(reference) + len(received)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(received, size) * np.conj(np.fft.rfft(reference, size)), size)
    lag = int(np.argmax(corr))  # corr[k] is lag k, and corr[size - k] lag -k: the capture missed k samples
    lag = lag if lag < len(received) else lag - size
    blocks = -(-len(reference) // buffer)
    spare = max(2, (len(received) - len(reference)) // buffer + 2)  # inserted buffers, either side of the lag
    ref = np.zeros(blocks * buffer, np.float64)
    ref[: len(reference)] = reference
    ref = ref.reshape(blocks, buffer)
    first = lag - spare * buffer  # candidate chunk j starts at first + j * buffer
    chunks = np.zeros((blocks + 2 * spare + 1) * buffer, np.float64)
    lo, hi = max(0, first), min(len(received), first + len(chunks))
    if lo < hi:
        chunks[lo - first : hi - first] = received[lo:hi]
    chunks = chunks.reshape(-1, buffer)
    dots = ref @ chunks.T  # (blocks, chunks)
    states = np.arange(2 * spare + 1)  # block i read from chunk i + state
    score = dots[np.arange(blocks)[:, None], np.arange(blocks)[:, None] + states]
    best, came = score[0].copy(), np.zeros((blocks, len(states)), np.int64)
    for i in range(1, blocks):  # from block i - 1 at state k (nothing inserted) or k - 1 (a buffer inserted)
        stay, step = best, np.r_[-np.inf, best[:-1]]
        came[i] = np.where(step > stay, states - 1, states)
        best = score[i] + np.maximum(stay, step)
    state = int(np.argmax(best))
    aligned = np.empty_like(ref)
    for i in range(blocks - 1, -1, -1):
        aligned[i] = chunks[i + state]
        state = came[i, state]
    aligned, ref = aligned.ravel(), ref.ravel()
    return float(ref @ aligned / np.sqrt((ref @ ref) * (aligned @ aligned) + 1e-30))


def test_the_alignment_check_forgives_inserted_buffers_and_nothing_else():
    """What the browser test's audio check accepts: the file after a lead-in, with whole buffers inserted (a
    starved real-time capture), yes; the file reversed, or with a second of it replaced, no."""
    audio, rate = sf.read(EXAMPLE, dtype="float32")
    buffer, rng = rate // 100, np.random.default_rng(0)
    cuts = np.sort(rng.choice(len(audio) // buffer, 12, replace=False)) * buffer
    pieces = [np.zeros(3 * buffer + 17, np.float32)]  # the page starts late
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(audio)], strict=True):
        pieces += [audio[a:b], np.zeros(buffer, np.float32)]  # 13 buffers of silence inserted
    received = np.concatenate(pieces)
    assert aligned_correlation(audio, received, buffer) >= 0.99
    assert aligned_correlation(audio[::-1].copy(), received, buffer) < 0.5
    # A capture that began 57 samples into the file, at the page's 44.1 kHz, where the nearest lag later
    # than the file's start is not a whole buffer from the true one (only lags >= 0 were tried: 0.985).
    page = resample(torch.from_numpy(audio), rate, 44100).numpy()
    assert aligned_correlation(page, page[57:], 441) >= 0.99
    spoilt = received.copy()
    loud = np.flatnonzero(np.abs(spoilt) > 0.05)
    spoilt[loud[0] : loud[0] + rate] = rng.normal(0, 0.1, rate)  # a second of the speech replaced by noise
    assert aligned_correlation(audio, spoilt, buffer) < 0.99


def test_page_in_headless_chromium_transcribes_the_fake_microphone(wav, tmp_path):
    path, audio, rate = wav
    expected = transcribe_texts(path)
    assert expected, "the example has speech"
    record, profile = tmp_path / "record", tmp_path / "profile"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server_cmd = [sys.executable, "-m", "swa_stream.pipelines.cli", "serve", "--port", "0", "--record", str(record)]
    with process(server_cmd, stderr=subprocess.PIPE, text=True, env=env) as server:
        line = wait_for("the server", lambda: server.stderr.readline() or "exited", 60)
        assert "listening on" in line, line + server.stderr.read()
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        page = f"http://127.0.0.1:{port}/"
        browser_cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                       "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                       "--remote-debugging-port=0", "--use-fake-ui-for-media-stream",
                       "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={path}%noloop",
                       page]
        with process(browser_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
            port_file = profile / "DevToolsActivePort"
            wait_for("DevToolsActivePort", lambda: port_file.is_file() and port_file.read_text().strip(), 30)
            status, texts, words, lost = asyncio.run(drive_page(profile, page, len(audio) / rate, server.kill))
    assert status == "done"
    assert lost.startswith("connection lost"), lost
    received_path = Path(record) / "stream-1.wav"
    # The page shows what `transcribe` makes of the audio the server received. That audio is the file as
    # the browser captured and resampled it (checked below), not its samples: where the model is near a
    # decision, the file's own transcript may differ from it by a word.
    assert texts == transcribe_texts(received_path)
    assert len(texts) == len(expected)
    assert all(w for w in words), "each final shows its word times"

    received, got_rate = sf.read(received_path, dtype="float32")
    reference = resample(torch.from_numpy(audio.astype(np.float32) / 32768), rate, got_rate).numpy()
    assert aligned_correlation(reference, received, buffer=got_rate // 100) >= 0.99
    assert aligned_correlation(reference[::-1].copy(), received, buffer=got_rate // 100) < 0.5, "the check can fail"


def test_page_says_when_the_microphone_is_refused(tmp_path):
    """Without --use-fake-ui-for-media-stream, headless Chromium answers the permission prompt with a refusal."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server_cmd = [sys.executable, "-m", "swa_stream.pipelines.cli", "serve", "--port", "0"]
    with process(server_cmd, stderr=subprocess.PIPE, text=True, env=env) as server:
        line = wait_for("the server", lambda: server.stderr.readline() or "exited", 60)
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        page = f"http://127.0.0.1:{port}/"
        profile = tmp_path / "profile"
        browser_cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                       f"--user-data-dir={profile}", "--remote-debugging-port=0",
                       "--use-fake-device-for-media-stream", page]
        with process(browser_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
            port_file = profile / "DevToolsActivePort"
            wait_for("DevToolsActivePort", lambda: port_file.is_file() and port_file.read_text().strip(), 30)

            async def go():
                async with open_page(profile, page) as dt:
                    await dt.click("start")
                    return await dt.until("the error state", f"document.getElementById('status').className "
                                          f"=== 'error' ? {STATUS} : ''", 30)
            assert asyncio.run(go()).startswith("microphone refused")
