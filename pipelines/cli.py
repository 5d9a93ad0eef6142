"""The `swa-stream` command. User errors print one line and exit 2; `--debug` shows the traceback."""

from __future__ import annotations

import argparse
import sys

from swa_stream.errors import SWAStreamError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swa-stream", description="Exact streaming sliding-window attention for speech and DNA."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="receptive field, latency, state size and cost of a config")
    info.add_argument("--config", required=True, help="YAML file with an encoder section (SWAConfig fields)")
    info.add_argument("--plot", metavar="PNG", help="draw the receptive field layer by layer")

    demo = commands.add_parser("demo", help="show the bundled configs and check streaming == offline")
    demo.add_argument("--configs", default="configs", help="folder of YAML configs (default: configs)")
    demo.add_argument("--length", type=int, default=2000, help="positions to stream per config")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "info":
            from swa_stream.pipelines import info

            info.run(args.config, args.plot)
        elif args.command == "demo":
            from swa_stream.pipelines import demo

            demo.run(args.configs, args.length)
    except SWAStreamError as err:
        if args.debug:
            raise
        print(f"swa-stream: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("swa-stream: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
