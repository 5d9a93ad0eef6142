"""`swa-stream serve`: vosk-server's protocol and the native one against a real server on 127.0.0.1, with real
websocket clients. The reference is `swa-stream transcribe --format jsonl` on the same 16-bit WAV file: the
native protocol's finals must equal it line for line for any framing, and vosk's texts must say the same.
Then the limits (503, 1009, 1001, 1003, 403, 401), backpressure, SIGTERM finals, --workers and stream-to."""

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile as sf
import torch

from swa_stream import SWAConfig
from swa_stream.pipelines.bundles import load_asr_model
from swa_stream.pipelines.cli import main
from swa_stream.pipelines.serve import Limits, Server, _bind
from swa_stream.pipelines.serve_batch import BatchedRecognizer
from swa_stream.tasks.asr.audio import resample
from swa_stream.tasks.asr.decoder import EndpointConfig
from swa_stream.tasks.asr.frontend import FrontendConfig
from swa_stream.tasks.asr.model import ASRModel
from swa_stream.tasks.asr.text import VOCABULARY

EXAMPLE = Path(__file__).parents[2] / "pipelines" / "examples" / "asr_demo.wav"


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    """The demo example (ADPCM) as 16-bit PCM at 16 kHz: what a client sends as s16le, sample for sample."""
    audio, rate = sf.read(EXAMPLE, dtype="int16")
    path = tmp_path_factory.mktemp("serve") / "digits.wav"
    sf.write(path, audio, rate, subtype="PCM_16")
    return path, audio, rate


@pytest.fixture(scope="module")
def reference(wav):
    """The CLI's jsonl lines for the file."""
    return transcribe_lines(wav[0])


def transcribe_lines(path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["transcribe", str(path), "--format", "jsonl"]) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


def finals(lines):
    return [r for r in lines if r.get("type") == "final"]


@pytest.fixture(scope="module")
def model():
    return load_asr_model(None)


class ServerThread:
    """A real server on a free port, its event loop in a thread of the test process."""

    def __init__(self, model, **limits):
        record = limits.pop("record", None)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = Server(model, "asr-demo", Limits(**limits), EndpointConfig(), record)
        sock = _bind("127.0.0.1", 0)
        sock.listen(64)
        self.port = self.call(self.server.start("127.0.0.1", 0, sock))
        self.url = f"ws://127.0.0.1:{self.port}"

    def call(self, coro, timeout=60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self):
        self.call(self.server.drain(grace=5))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def server(model):
    s = ServerThread(model, max_streams=4, queue=4)
    yield s
    s.stop()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def session_ws(url, messages, headers=None, pause=0.0):
    """Send `messages` (bytes or dict) without waiting for replies, `pause` s apart; return (replies, close code)."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, headers=headers or {}) as ws:
            replies = []

            async def receive():
                async for msg in ws:
                    replies.append(json.loads(msg.data))

            task = asyncio.create_task(receive())
            for m in messages:
                await (ws.send_bytes(m) if isinstance(m, bytes) else ws.send_str(json.dumps(m)))
                await asyncio.sleep(pause)
            await task
            return replies, ws.close_code


def framed(audio, sizes):
    """Cut int16 audio into messages of the given sample counts (cycled)."""
    out, i, k = [], 0, 0
    while i < len(audio):
        out.append(audio[i:i + sizes[k % len(sizes)]].tobytes())
        i, k = i + sizes[k % len(sizes)], k + 1
    return out


@pytest.mark.parametrize("sizes", [[1600], [1, 7, 333, 4001, 20000], [10**7]], ids=["100ms", "ragged", "one"])
def test_native_finals_equal_transcribe_for_any_framing(server, wav, reference, sizes):
    _, audio, rate = wav
    replies, code = run(session_ws(server.url + "/v1/stream", [{"config": {"sample_rate": rate}}]
                                   + framed(audio, sizes) + [{"eof": 1}]))
    assert code == 1000
    assert replies[-1] == {"type": "eof"}
    assert finals(replies) == finals(reference)
    assert len(finals(replies)) == 2
    partials = [r["text"] for r in replies if r["type"] == "partial"]
    assert all(a != b for a, b in zip(partials, partials[1:], strict=False)), "partials only when they change"


def test_concurrent_streams_share_steps_and_each_gets_its_own_cli_finals(model, wav, tmp_path):
    """Streams at different rates, framings and start times, batched together: each one's finals equal the
    CLI's on its own file."""
    _, audio, rate = wav
    cases = []
    for k, (new_rate, size) in enumerate([(16000, 1600), (44100, 4410), (8000, 800), (22050, 7000)]):
        x = resample(torch.from_numpy(audio.astype(np.float32) / 32768), rate, new_rate).numpy()
        pcm = np.clip(np.rint(x * 32768), -32768, 32767).astype(np.int16)
        path = tmp_path / f"at{new_rate}.wav"
        sf.write(path, pcm, new_rate, subtype="PCM_16")
        cases.append((path, pcm, new_rate, size, 0.1 * k))
    s = ServerThread(model)
    try:
        async def one(pcm, new_rate, size, delay):
            await asyncio.sleep(delay)  # joins a batch that is already running
            return await session_ws(s.url + "/v1/stream", [{"config": {"sample_rate": new_rate}}]
                                    + framed(pcm, [size]) + [{"eof": 1}], pause=0.01)

        async def all_streams():
            return await asyncio.gather(*(one(*c[1:]) for c in cases))

        results = run(all_streams())
        for (path, *_), (replies, code) in zip(cases, results, strict=True):
            assert code == 1000
            assert finals(replies) == finals(transcribe_lines(path)), path.name
        if s.server.recognizer.ragged:
            assert s.server.recognizer.rows_max > 1, "streams shared a step"
    finally:
        s.stop()


def test_vosk_protocol_one_reply_per_message(server, wav, reference):
    _, audio, rate = wav
    messages = framed(audio, [int(rate * 0.2)])  # what vosk's test.py sends: 0.2 s per message
    for path in ("/", "/ws"):
        replies, code = run(session_ws(server.url + path, [{"config": {"sample_rate": rate, "words": True}}]
                                       + messages + [{"eof": 1}]))
        assert code == 1000
        assert len(replies) == len(messages) + 1
        assert all(set(r) == {"partial"} or set(r) == {"text", "result"} for r in replies)
        texts = [r["text"] for r in replies if "text" in r]
        assert " ".join(t for t in texts if t) == " ".join(r["text"] for r in finals(reference))
        words = [w for r in replies if "result" in r for w in r["result"]]
        assert [w["word"] for w in words] == [w["word"] for r in finals(reference) for w in r["words"]]
        # conf: the decoder's word confidence where it has one, else 1.0; times as the native protocol's
        native = [w for r in finals(reference) for w in r["words"]]
        assert [(w["start"], w["end"]) for w in words] == [(w["start"], w["end"]) for w in native]
        assert [w["conf"] for w in words] == pytest.approx([w.get("conf", 1.0) for w in native], abs=5e-4)


def test_vosk_words_false_and_eof_without_audio(server):
    replies, code = run(session_ws(server.url + "/ws", [{"config": {"sample_rate": 8000, "words": False}},
                                                        np.zeros(800, "<i2").tobytes(), {"eof": 1}]))
    assert (replies, code) == ([{"partial": ""}, {"text": ""}], 1000)
    replies, code = run(session_ws(server.url + "/ws", [{"eof": 1}]))
    assert (replies, code) == ([{"text": "", "result": []}], 1000)


def test_page_static_files_and_healthz(server):
    async def get(path):
        async with aiohttp.ClientSession() as s, s.get(server.url.replace("ws:", "http:") + path) as r:
            return r.status, r.content_type, await r.text()

    status, ctype, page = run(get("/"))
    assert (status, ctype) == (200, "text/html") and "app.js" in page
    for name in ("app.js", "worklet.js"):
        assert run(get("/web/" + name))[0] == 200
    status, _, body = run(get("/healthz"))
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["model"] == "asr-demo"
    assert {"streams", "uptime_s", "max_streams", "samples_received"} <= set(health)


def upgrade_status(url, headers=None):
    async def attempt():
        async with aiohttp.ClientSession() as s:
            try:
                async with s.ws_connect(url, headers=headers or {}):
                    return 101
            except aiohttp.WSServerHandshakeError as err:
                return err.status

    return run(attempt())


def test_max_streams_503(server):
    async def hold():
        while server.server.connections:  # earlier tests' streams are closing
            await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as s:
            held = [await s.ws_connect(server.url + "/ws") for _ in range(4)]
            try:
                await s.ws_connect(server.url + "/ws")
            except aiohttp.WSServerHandshakeError as err:
                status = err.status
            for ws in held:
                await ws.send_str('{"eof": 1}')
                await ws.receive()
                await ws.close()
            return status

    assert run(hold()) == 503
    assert upgrade_status(server.url + "/ws") == 101  # freed again


def test_bad_data_1003_and_too_big_1009(model):
    s = ServerThread(model, max_message=4000)
    try:
        cases = [[b"\x00\x01\x02"], ["not json"], [{"config": {"sample_rate": 100}}],
                 [{"config": {"sample_rate": 16000}}, b"\0\0", {"config": {"sample_rate": 8000}}]]
        for messages in cases:
            async def send(messages=messages):
                async with aiohttp.ClientSession() as session, session.ws_connect(s.url + "/ws") as ws:
                    for m in messages:
                        await (ws.send_bytes(m) if isinstance(m, bytes) else
                               ws.send_str(m if isinstance(m, str) else json.dumps(m)))
                    async for _ in ws:
                        pass
                    return ws.close_code
            assert run(send()) == 1003, messages
        replies, code = run(session_ws(s.url + "/ws", [np.zeros(2001, "<i2").tobytes()]))
        assert code == 1009
    finally:
        s.stop()


def test_idle_timeout_sends_finals_then_1001(model, wav, reference):
    _, audio, rate = wav
    s = ServerThread(model, idle_timeout=1.0)
    try:
        async def go():
            async with aiohttp.ClientSession() as session, session.ws_connect(s.url + "/v1/stream") as ws:
                await ws.send_bytes(audio.tobytes())
                replies = [json.loads(m.data) async for m in ws]  # no eof sent: the server times out
                return replies, ws.close_code
        replies, code = run(go())
        assert code == 1001
        assert finals(replies) == finals(reference)
    finally:
        s.stop()


def test_origins_and_token(model):
    s = ServerThread(model)  # default: same origin, or no Origin at all
    try:
        host = f"127.0.0.1:{s.port}"
        assert upgrade_status(s.url + "/v1/stream") == 101
        assert upgrade_status(s.url + "/v1/stream", {"Origin": f"http://{host}"}) == 101
        assert upgrade_status(s.url + "/v1/stream", {"Origin": "http://evil.example"}) == 403
    finally:
        s.stop()
    s = ServerThread(model, allowed_origins=("https://app.example",), token="s3cret")
    try:
        ok = {"Authorization": "Bearer s3cret"}
        assert upgrade_status(s.url + "/ws") == 401
        assert upgrade_status(s.url + "/ws", {"Authorization": "Bearer wrong"}) == 401
        assert upgrade_status(s.url + "/ws", ok) == 101
        assert upgrade_status(s.url + "/ws?token=s3cret") == 101
        assert upgrade_status(s.url + "/ws", {**ok, "Origin": "https://app.example"}) == 101
        assert upgrade_status(s.url + "/ws", {**ok, "Origin": f"http://127.0.0.1:{s.port}"}) == 403
    finally:
        s.stop()


def test_fast_sender_loses_nothing_through_a_small_queue(model, wav, reference):
    """A client that sends everything at once into a 2-message queue: the server stops reading (TCP pushes
    back), and still counts every sample and gives the CLI's finals."""
    _, audio, rate = wav
    s = ServerThread(model, queue=2)
    try:
        messages = framed(audio, [160])  # 10 ms each: hundreds of messages
        replies, code = run(session_ws(s.url + "/v1/stream", messages + [{"eof": 1}]))
        assert code == 1000
        assert s.server.recognizer.samples_received == len(audio)
        assert s.server.recognizer.messages_received == len(messages)
        assert finals(replies) == finals(reference)
    finally:
        s.stop()


def test_a_stalled_server_stops_reading_and_tcp_pushes_back():
    """With compute held up, the server reads exactly --queue audio messages of a stream and no more; the
    client's sends then block (its socket buffers fill), and once compute resumes everything arrives."""
    tiny = ASRModel(FrontendConfig(d_model=32, conv_channels=8),  # transport only: a small random model is enough
                    SWAConfig(d_model=32, n_heads=2, n_layers=2, window=[(8, 0), (8, 1)]), VOCABULARY).eval()
    s = ServerThread(tiny, queue=4)
    release = threading.Event()
    s.server.recognizer._executor.submit(release.wait)  # the compute thread is busy until released
    rec = s.server.recognizer
    try:
        async def go():
            async with aiohttp.ClientSession() as session, session.ws_connect(s.url + "/ws") as ws:
                message = np.zeros(16000, "<i2").tobytes()  # 1 s of silence, 32 KB

                async def send_all():
                    for _ in range(640):  # 20 MB: more than loopback socket buffers hold
                        await ws.send_bytes(message)
                    await ws.send_str('{"eof": 1}')

                sender = asyncio.create_task(send_all())
                while rec.messages_received < 4:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)
                stalled = (rec.messages_received, sender.done())
                release.set()
                await sender
                replies = [json.loads(m.data) async for m in ws]
                return stalled, len(replies), ws.close_code
        stalled, replies, code = run(go())
        assert stalled == (4, False)
        assert (replies, code, rec.messages_received, rec.samples_received) == (641, 1000, 640, 640 * 16000)
    finally:
        release.set()
        s.stop()


def test_queued_audio_merges_into_one_step_and_the_last_reply_carries_the_finals(model, wav, reference):
    _, audio, rate = wav

    async def go():
        rec = BatchedRecognizer(model, EndpointConfig())
        stream = rec.open(rate)
        futures = [rec.feed(stream, piece) for piece in np.array_split(audio, 7)]  # queued before any step
        eof = rec.finish(stream)
        scheduler = asyncio.create_task(rec.run())
        results = [await f for f in futures] + [await eof]
        scheduler.cancel()
        rec.shutdown()
        return rec.steps, results

    steps, results = run(go())
    assert steps == 1
    assert all(r.finals == [] for r in results[:6])
    assert [seg.to_dict() for r in results[6:] for seg in r.finals] == finals(reference)


def test_cli_errors_are_one_line_before_any_model_loads(server, capsys):
    assert main(["serve", "--port", str(server.port)]) == 2  # taken by the fixture's server
    assert capsys.readouterr().err.startswith(f"swa-stream: error: --port: cannot listen on 127.0.0.1:{server.port}")
    assert main(["serve", "--workers", "0"]) == 2
    assert "--workers: must be >= 1" in capsys.readouterr().err
    assert main(["stream-to", "http://127.0.0.1:1", "x.wav"]) == 2
    assert "not a websocket URL" in capsys.readouterr().err


def start_cli_server(*args, listening=1, timeout=120.0):
    """`swa-stream serve --port 0 ARGS` in a process of its own; returns it and its port once `listening`
    workers have said they listen. Its stderr is read to the end by a thread (so the pipe never fills), and a
    server that has not said so within `timeout` seconds is killed and the test fails with what it said."""
    proc = subprocess.Popen([sys.executable, "-m", "swa_stream.pipelines.cli", "serve", "--port", "0", *args],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines, ready = [], threading.Event()

    def read():
        heard = 0
        for line in proc.stderr:
            lines.append(line)
            heard += line.count("listening on")
            if heard >= listening:
                ready.set()
        ready.set()  # the server closed its stderr: it exited

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(timeout) or proc.poll() is not None:
        proc.kill()
        proc.wait()
        pytest.fail(f"the server did not say it listens within {timeout:g} s: " + "".join(lines))
    said = "".join(lines)
    return proc, int(said.split("http://127.0.0.1:")[1].split()[0].rstrip("/"))


def test_cli_workers_stream_to_and_sigterm_finals(wav, reference):
    path, audio, rate = wav
    proc, port = start_cli_server("--workers", "2", listening=2)
    try:
        out = subprocess.run([sys.executable, "-m", "swa_stream.pipelines.cli", "stream-to", f"ws://127.0.0.1:{port}",
                              str(path), "--fast"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert finals(json.loads(line) for line in out.stdout.splitlines()) == finals(reference)

        async def health_pids():
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
                pids = set()
                for _ in range(40):  # SO_REUSEPORT spreads new connections by a hash of the client's port
                    async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                        pids.add((await r.json())["pid"])
                    if len(pids) == 2:
                        break
                return pids
        assert len(run(health_pids())) == 2, "both workers answer on the one port"

        first_end = finals(reference)[0]["end"]
        first = audio[: int(rate * (first_end + 0.5))]  # the first segment and 0.5 s of silence: not final yet

        async def open_streams_then_sigterm():
            async with aiohttp.ClientSession() as session:
                streams = [await session.ws_connect(f"ws://127.0.0.1:{port}/v1/stream") for _ in range(3)]
                for ws in streams:
                    await ws.send_bytes(first.tobytes())
                for ws in streams:  # the reply shows the whole segment as a partial: the server has it all
                    while json.loads((await ws.receive()).data).get("text") != finals(reference)[0]["text"]:
                        pass
                proc.send_signal(signal.SIGTERM)
                results = []
                for ws in streams:
                    replies = [json.loads(m.data) async for m in ws]
                    results.append((finals(replies), replies[-1], ws.close_code))
                return results
        for got, last, code in run(open_streams_then_sigterm()):
            assert (got, last, code) == (finals(reference)[:1], {"type": "eof"}, 1001)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_server_decodes_with_the_bundles_lexicon_unless_told_not_to(model):
    assert model.lexicon and "six" in model.lexicon
    for flag, lexicon in ((False, model.lexicon), (True, None)):
        rec = BatchedRecognizer(model, EndpointConfig(), open_vocabulary=flag)
        try:
            assert rec.decoder.lexicon == lexicon
        finally:
            rec.shutdown()
    from swa_stream.pipelines.cli import _parser

    args = _parser().parse_args(["serve", "--open-vocabulary"])
    assert args.open_vocabulary and not _parser().parse_args(["serve"]).open_vocabulary
