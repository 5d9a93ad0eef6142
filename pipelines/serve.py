"""`swa-stream serve`: a websocket speech server on aiohttp, with a microphone page.

One port serves the page (GET /), vosk-server's protocol (websocket at / and /ws), the native protocol
(/v1/stream: exactly the objects `transcribe --format jsonl` prints, then {"type": "eof"}) and /healthz.
Compute goes through `BatchedRecognizer` (serve_batch.py) in an executor thread. docs/server.md has the
protocols, the limits and their close codes.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from swa_stream.errors import SWAStreamError
from swa_stream.pipelines.serve_batch import BatchedRecognizer, StepResult
from swa_stream.pipelines.transcribe import Writer

MIN_RATE, MAX_RATE = 8000, 192000
CLOSE_GOING_AWAY, CLOSE_BAD_DATA = WSCloseCode.GOING_AWAY, WSCloseCode.UNSUPPORTED_DATA


@dataclass
class Limits:
    max_streams: int = 100
    max_message: int = 1 << 20  # bytes; aiohttp closes with 1009 beyond it
    idle_timeout: float = 30.0  # seconds without a message: finals, then close 1001
    queue: int = 32  # unanswered messages per connection before the server stops reading it
    allowed_origins: tuple[str, ...] | None = None  # None: same origin (or no Origin header) only
    token: str | None = None


class _Lines:
    """A file-like sink for transcribe's Writer: collects the lines it would print."""

    def __init__(self):
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.extend(line for line in text.split("\n") if line)

    def flush(self) -> None:
        pass

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


class Connection:
    """One websocket stream: a reader that feeds the recognizer and a sender that answers in order."""

    def __init__(self, server: Server, ws: web.WebSocketResponse, native: bool):
        self.server, self.ws, self.native = server, ws, native
        self.rec = server.recognizer
        self.stream = None
        self.words = True
        self.space = asyncio.Semaphore(server.limits.queue)  # backpressure: a slot per unanswered message
        self.replies: asyncio.Queue = asyncio.Queue()
        self.sink = _Lines()
        self.writer = Writer("jsonl", out=self.sink, err=self.sink)
        self.reader: asyncio.Task | None = None
        self.close_code = WSCloseCode.OK

    async def run(self) -> None:
        self.reader = asyncio.create_task(self._read())
        sender = asyncio.create_task(self._send())
        await asyncio.wait({self.reader, sender}, return_when=asyncio.FIRST_COMPLETED)
        if sender.done():  # the socket is closed (an error, a client that left): nothing more to read
            self.reader.cancel()
            await asyncio.wait({self.reader})
            return
        if self.reader.cancelled():  # draining (SIGTERM): flush what this stream has, then close
            self._end(CLOSE_GOING_AWAY)
        elif self.reader.exception() is not None:  # a bug: end this stream, keep it in the log, keep serving
            print(f"swa-stream serve: stream failed: {self.reader.exception()!r}", file=sys.stderr)
            self._drop()
        await sender

    def _end(self, code: int) -> None:
        self.close_code = code
        if self.stream is not None:
            self.replies.put_nowait(("eof", self.rec.finish(self.stream)))
        else:
            self.replies.put_nowait(("eof", None))

    def _start(self, rate: int) -> None:
        self.stream = self.rec.open(rate)

    async def _read(self) -> None:
        limits = self.server.limits
        while True:
            await self.space.acquire()  # before reading: a full queue leaves the socket unread (TCP backpressure)
            try:
                msg = await self.ws.receive(timeout=limits.idle_timeout)
            except asyncio.TimeoutError:
                self._end(CLOSE_GOING_AWAY)
                return
            if msg.type == WSMsgType.BINARY:
                data = msg.data
                if len(data) % 2:
                    return await self._abort(CLOSE_BAD_DATA, "audio must be s16le: an even number of bytes")
                if self.stream is None:
                    self._start(16000)
                self.replies.put_nowait(("audio", self.rec.feed(self.stream, np.frombuffer(data, "<i2"))))
            elif msg.type == WSMsgType.TEXT:
                self.space.release()
                try:
                    obj = json.loads(msg.data)
                except ValueError:
                    return await self._abort(CLOSE_BAD_DATA, "text messages must be JSON")
                if not isinstance(obj, dict):
                    return await self._abort(CLOSE_BAD_DATA, "text messages must be JSON objects")
                if obj.get("eof"):
                    self._end(WSCloseCode.OK)
                    return
                if "config" in obj:
                    problem = self._configure(obj["config"])
                    if problem:
                        return await self._abort(CLOSE_BAD_DATA, problem)
            else:  # the client closed, or aiohttp closed for it (1009: message too big)
                self._drop()
                return

    def _configure(self, config) -> str | None:
        if not isinstance(config, dict):
            return "config must be an object"
        if self.stream is not None:
            return "config must come before the audio"
        rate = config.get("sample_rate", 16000)
        if not isinstance(rate, int | float) or rate != int(rate) or not MIN_RATE <= rate <= MAX_RATE:
            return f"sample_rate must be a whole number of Hz in {MIN_RATE}..{MAX_RATE}, got {rate!r}"
        self.words = bool(config.get("words", True))
        self._start(int(rate))
        return None

    async def _abort(self, code: int, reason: str) -> None:
        self._drop(notify=False)
        self.close_code = code
        self.replies.put_nowait(("abort", reason))

    def _drop(self, notify: bool = True) -> None:
        if self.stream is not None:
            self.rec.drop(self.stream)
        if notify:
            self.replies.put_nowait(("gone", None))

    async def _send(self) -> None:
        ws = self.ws
        while True:
            kind, item = await self.replies.get()
            if kind == "gone":
                return
            if kind == "abort":
                await ws.close(code=self.close_code, message=item.encode()[:120])
                return
            try:
                result = StepResult([], "") if item is None else await item
            except asyncio.CancelledError:  # dropped: the item that says why (gone, abort) follows
                continue
            except Exception as err:  # the compute failed for this stream: say so instead of hanging up silently
                await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=f"server error: {err}".encode()[:120])
                return
            try:
                for text in self._format(result, final=kind == "eof"):
                    await ws.send_str(text)
                if kind == "eof":
                    if self.native:
                        await ws.send_str(json.dumps({"type": "eof"}))
                    await ws.close(code=self.close_code)
                    return
            except ConnectionResetError:
                self._drop()
                return
            self.space.release()

    def _format(self, result: StepResult, final: bool) -> list[str]:
        if self.native:  # transcribe's own Writer: the same objects, partials only when they change
            for seg in result.finals:
                self.writer.final(seg)
            if not final:
                self.writer.partial(result.partial)
            return self.sink.take()
        if final:  # vosk's FinalResult: one object, the segments still open joined
            return [json.dumps(self._vosk_final(result.finals))]
        if result.finals:
            return [json.dumps(self._vosk_final([seg])) for seg in result.finals]
        return [json.dumps({"partial": result.partial})]

    def _vosk_final(self, segments) -> dict:
        out: dict = {"text": " ".join(seg.text for seg in segments)}
        if self.words:
            # vosk's `conf`: the decoder's word confidence where it gives one, else 1.0 (greedy CTC)
            out["result"] = [{"conf": round(float(getattr(w, "conf", 1.0)), 6), "end": round(w.end, 3),
                              "start": round(w.start, 3), "word": w.word} for seg in segments for w in seg.words]
        return out


class Server:
    def __init__(self, model, model_name: str, limits: Limits, endpoint=None, record_dir=None,
                 open_vocabulary: bool = False):
        self.limits, self.model_name = limits, model_name
        self.recognizer = BatchedRecognizer(model, endpoint, record_dir, open_vocabulary)
        self.connections: set[Connection] = set()
        self.draining = False
        self.started = time.monotonic()
        self.app = web.Application()
        self.app.router.add_get("/", self.index)
        self.app.router.add_get("/ws", self.vosk)
        self.app.router.add_get("/v1/stream", self.native)
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_static("/web", str(resources.files("swa_stream.pipelines").joinpath("web")))
        self._scheduler: asyncio.Task | None = None

    async def start(self, host: str, port: int, sock: socket.socket | None = None) -> int:
        """Listen (on `sock` if given, else host:port with SO_REUSEPORT); returns the bound port."""
        self._scheduler = asyncio.create_task(self.recognizer.run())
        self.runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self.runner.setup()
        self.site = web.SockSite(self.runner, sock) if sock else web.TCPSite(self.runner, host, port, reuse_port=True)
        await self.site.start()
        return self.site._server.sockets[0].getsockname()[1]

    async def drain(self, grace: float = 30.0) -> None:
        """SIGTERM: accept nothing new, flush every open stream and send its finals, then stop."""
        self.draining = True  # from here, upgrades get 503
        for conn in list(self.connections):
            if conn.reader is not None:
                conn.reader.cancel()
        deadline = time.monotonic() + grace
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # the listening socket closes only now: on newer Pythons, closing a server waits for its connections
        await self.site.stop()
        await self.runner.cleanup()
        self._scheduler.cancel()
        self.recognizer.shutdown()

    # ---- handlers ---------------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self.vosk(request)
        return web.FileResponse(str(resources.files("swa_stream.pipelines").joinpath("web", "index.html")))

    async def healthz(self, request: web.Request) -> web.Response:
        rec = self.recognizer
        return web.json_response({
            "status": "draining" if self.draining else "ok", "streams": len(self.connections),
            "max_streams": self.limits.max_streams, "model": self.model_name, "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started, 3), "messages_received": rec.messages_received,
            "samples_received": rec.samples_received, "steps": rec.steps, "computes": rec.computes,
            "batch_rows_max": rec.rows_max,
            "compute_s": round(rec.compute_seconds, 3)})

    async def vosk(self, request: web.Request) -> web.StreamResponse:
        return await self._websocket(request, native=False)

    async def native(self, request: web.Request) -> web.StreamResponse:
        return await self._websocket(request, native=True)

    def _check(self, request: web.Request) -> None:
        limits = self.limits
        origin = request.headers.get("Origin")
        if origin is not None and not _origin_allowed(origin, request.host, limits.allowed_origins):
            raise web.HTTPForbidden(text=f"origin {origin} is not allowed (--allowed-origins)\n")
        if limits.token is not None:
            auth = request.headers.get("Authorization", "")
            given = auth[7:] if auth.startswith("Bearer ") else request.query.get("token", "")
            if not hmac.compare_digest(given.encode(), limits.token.encode()):
                raise web.HTTPUnauthorized(text="a token is required: Authorization: Bearer TOKEN or ?token=TOKEN\n")
        if self.draining:
            raise web.HTTPServiceUnavailable(text="the server is shutting down\n")
        if len(self.connections) >= limits.max_streams:
            raise web.HTTPServiceUnavailable(text=f"all {limits.max_streams} streams are in use (--max-streams)\n")

    async def _websocket(self, request: web.Request, native: bool) -> web.StreamResponse:
        self._check(request)
        ws = web.WebSocketResponse(max_msg_size=self.limits.max_message, autoping=True)
        await ws.prepare(request)
        conn = Connection(self, ws, native)
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
            if conn.stream is not None and conn.stream.id in self.recognizer.streams and conn.stream.eof is None:
                self.recognizer.drop(conn.stream)
        return ws


def _origin_allowed(origin: str, host: str, allowed: tuple[str, ...] | None) -> bool:
    if allowed is None:  # same origin: what a page served by this server sends
        return urlsplit(origin).netloc == host
    return "*" in allowed or origin.rstrip("/") in allowed


# ---- the command --------------------------------------------------------------------------------------
def _limits(args) -> Limits:
    for name in ("max_streams", "max_message", "queue", "workers", "threads"):
        if getattr(args, name) < 1:
            raise SWAStreamError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(args, name)}")
    if not args.idle_timeout > 0:
        raise SWAStreamError(f"--idle-timeout: must be > 0, got {args.idle_timeout}")
    origins = None
    if args.allowed_origins:
        origins = tuple(o.strip().rstrip("/") for o in args.allowed_origins.split(",") if o.strip())
    return Limits(args.max_streams, args.max_message, args.idle_timeout, args.queue, origins, args.token or None)


def _bind(host: str, port: int, share: bool = False) -> socket.socket:
    """A socket bound to host:port. `share` sets SO_REUSEPORT, so that --workers processes share one port;
    a single server does not, so that a port already in use is an error rather than silently shared."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if share:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise SWAStreamError(f"--port: cannot listen on {host}:{port} ({err.strerror})") from None
    return sock


def run(args) -> None:
    limits = _limits(args)
    sock = _bind(args.host, args.port, share=args.workers > 1)
    port = sock.getsockname()[1]
    if args.workers == 1:
        _serve(args, limits, sock, port)
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=_worker, args=(args, limits, port), daemon=False) for _ in range(args.workers)]
    for w in workers:
        w.start()
    print(f"swa-stream serve: {args.workers} workers on http://{args.host}:{port} (SO_REUSEPORT)",
          file=sys.stderr, flush=True)

    def forward(signum, frame):
        for w in workers:
            if w.pid and w.is_alive():
                os.kill(w.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for w in workers:
        w.join()
    sock.close()  # held until here so that no other program takes the port between worker restarts


def _worker(args, limits: Limits, port: int) -> None:
    sock = _bind(args.host, port, share=True)
    try:
        _serve(args, limits, sock, port)
    except SWAStreamError as err:
        print(f"swa-stream: error: {err}", file=sys.stderr)
        sys.exit(2)


def _serve(args, limits: Limits, sock: socket.socket, port: int) -> None:
    import torch

    from swa_stream.pipelines.bundles import load_asr_model
    from swa_stream.tasks.asr.decoder import EndpointConfig

    torch.set_num_threads(args.threads)
    model = load_asr_model(args.model)
    name = args.model or "asr-demo"
    server = Server(model, name, limits, EndpointConfig(), args.record, args.open_vocabulary)
    server.recognizer.warm_up()
    asyncio.run(_main(server, args.host, port, sock))


async def _main(server: Server, host: str, port: int, sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sock.listen(1024)
    await server.start(host, port, sock)
    page = "localhost" if host in ("127.0.0.1", "::1") else host  # the mic needs localhost or HTTPS
    print(f"swa-stream serve: listening on http://{host}:{port} (pid {os.getpid()}); page at http://{page}:{port}/",
          file=sys.stderr, flush=True)
    await stop.wait()
    print(f"swa-stream serve: stopping (pid {os.getpid()}): flushing {len(server.connections)} open streams",
          file=sys.stderr, flush=True)
    await server.drain()
    rec = server.recognizer
    print(f"swa-stream serve: stopped (pid {os.getpid()}): received {rec.samples_received} samples in "
          f"{rec.messages_received} messages", file=sys.stderr, flush=True)
