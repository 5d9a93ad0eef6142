"""`swa-stream stream-to ws://HOST:PORT FILE|--mic [--fast]`: a client of `swa-stream serve`.

Sends a file (at real-time pace on an absolute clock, or as fast as the server takes it with --fast) or the
microphone as s16le over the native protocol (/v1/stream), and prints what the server sends: the same jsonl
lines `transcribe --format jsonl` prints. Sending and receiving run side by side, so replies never hold up
the audio; the server's bounded queue pushes back through TCP if it falls behind.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from swa_stream.errors import SWAStreamError


def to_pcm16(samples: np.ndarray) -> bytes:
    """float samples in [-1, 1] -> s16le, clamped and rounded (the page's worklet does the same)."""
    return np.clip(np.rint(np.asarray(samples, np.float64) * 32768.0), -32768, 32767).astype("<i2").tobytes()


def native_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise SWAStreamError(f"{url}: not a websocket URL (ws://HOST:PORT or wss://HOST/PATH)")
    return urlunsplit(parts._replace(path=parts.path if parts.path not in ("", "/") else "/v1/stream"))


async def stream(url: str, rate: int, chunks, fast: bool, token: str | None = None, out=None) -> int:
    """Send (n,) float chunks at `rate` Hz to `url`; write each reply line to `out`. Returns frames sent."""
    import aiohttp

    out = out or sys.stdout
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    sent = 0
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(url, headers=headers, max_msg_size=0)
        except aiohttp.WSServerHandshakeError as err:
            raise SWAStreamError(f"{url}: the server refused the stream (HTTP {err.status} {err.message})") from None
        except (aiohttp.ClientError, OSError) as err:
            raise SWAStreamError(f"{url}: cannot connect ({' '.join(str(err).split())})") from None

        async def receive():
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                if json.loads(msg.data).get("type") == "eof":
                    continue
                out.write(msg.data + "\n")
                out.flush()

        receiver = asyncio.create_task(receive())
        await ws.send_str(json.dumps({"config": {"sample_rate": rate}}))
        start = time.monotonic()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()  # Ctrl-C ends the audio: the server still flushes and sends the last finals
        loop.add_signal_handler(signal.SIGINT, stop.set)
        iterator = iter(chunks)
        while True:  # the microphone blocks in next(): read it off the event loop
            chunk = await loop.run_in_executor(None, next, iterator, None)
            if chunk is None or receiver.done() or stop.is_set():
                break
            if not fast:  # absolute schedule: no drift from the time each send takes
                await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
            await ws.send_bytes(to_pcm16(chunk))
            sent += len(chunk)
        if not ws.closed:
            await ws.send_str(json.dumps({"eof": 1}))
        await receiver
        if ws.close_code not in (None, 1000):
            raise SWAStreamError(f"{url}: the server closed the stream with code {ws.close_code}")
    return sent


def run(args) -> None:
    from swa_stream.pipelines.transcribe import file_source, mic_source

    if not args.chunk_ms > 0:
        raise SWAStreamError(f"--chunk-ms: must be > 0, got {args.chunk_ms}")
    if args.mic == (args.input is not None):
        raise SWAStreamError("stream-to: give a FILE or --mic (one of them)")
    url = native_url(args.url)
    rate, chunks = mic_source(args.chunk_ms) if args.mic else file_source(args.input, args.chunk_ms)
    asyncio.run(stream(url, rate, chunks, args.fast, args.token))
