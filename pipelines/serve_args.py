"""The options of `swa-stream serve` and `swa-stream stream-to`: argparse only, so that building the CLI's
parser imports neither aiohttp nor torch."""

from __future__ import annotations

import argparse


def add_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="DIR", help="ASR bundle (default: the bundled asr-demo)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=2700, help="port (default 2700, vosk-server's; 0: any free)")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port with SO_REUSEPORT")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker (default 1)")
    parser.add_argument("--max-streams", type=int, default=100, help="open streams per worker; beyond: HTTP 503")
    parser.add_argument("--max-message", type=int, default=1 << 20, metavar="BYTES",
                        help="largest websocket message (default 1 MiB); beyond: close 1009")
    parser.add_argument("--idle-timeout", type=float, default=30.0, metavar="S",
                        help="seconds without a message before the server sends finals and closes 1001 (default 30)")
    parser.add_argument("--queue", type=int, default=32, metavar="N",
                        help="unanswered audio messages per stream before the server stops reading it (default 32)")
    parser.add_argument("--allowed-origins", metavar="LIST",
                        help="comma-separated Origins allowed to open streams, or '*' (default: the page's own "
                             "origin, and clients that send no Origin); others get HTTP 403")
    parser.add_argument("--token", help="require this token as 'Authorization: Bearer TOKEN' or ?token=TOKEN")
    parser.add_argument("--open-vocabulary", action="store_true", help="send words as spelled, even outside "
                        "the model's lexicon (default: a misspelt word becomes the lexicon word that fits best)")
    parser.add_argument("--record", metavar="DIR", help="save each stream's received audio as DIR/stream-N.wav")


def add_stream_to(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="ws://HOST:PORT", help="a swa-stream serve address (path default /v1/stream)")
    parser.add_argument("input", nargs="?", metavar="FILE", help="wav/flac/ogg to send")
    parser.add_argument("--mic", action="store_true", help="send the default input device (Ctrl-C ends)")
    parser.add_argument("--fast", action="store_true", help="send as fast as the server takes it, not in real time")
    parser.add_argument("--chunk-ms", type=float, default=100.0, help="audio per message (default 100)")
    parser.add_argument("--token", help="the server's --token")
