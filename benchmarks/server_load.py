"""Load test of `swa-stream serve`: N clients on 127.0.0.1 stream real-time audio at once.

Each client speaks vosk's protocol (one reply per message, so each chunk's latency is measurable): it sends
--chunk-ms of s16le audio on an absolute schedule (chunk i leaves at t0 + offset + i * chunk), never waiting
for replies, then {"eof": 1}. Clients start at staggered offsets within one chunk, so streams join a running
server at different times, and are split over --processes client processes. Everything it starts (server,
client processes) is stopped at the end, and every wait is bounded.

Reported per N: frames (samples) sent minus frames the server counted (must be 0); per-chunk latency p50/p99
(reply time minus the moment the chunk's last sample was due); lag growth (mean latency of the last 10% of
chunks minus the first 10%); eof -> final; the server's CPU (cores over the run, and CPU ms per second of
audio, which other load on the machine does not inflate); whether every stream's transcript equals
`swa-stream transcribe` on the same audio; and what else loaded the machine.

    .venv/bin/python benchmarks/server_load.py --streams 10,50,100 --seconds 30 --json runs/server_load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "pipelines" / "examples" / "asr_demo.wav"
CLI = [sys.executable, "-m", "swa_stream.pipelines.cli"]


def make_audio(seconds: float, folder: Path) -> tuple[Path, np.ndarray]:
    """The demo example tiled to `seconds`, as a 16 kHz 16-bit WAV (the CLI's input) and its samples."""
    import soundfile as sf

    one, rate = sf.read(EXAMPLE, dtype="int16")
    audio = np.tile(one, int(np.ceil(seconds * rate / len(one))))[: int(seconds * rate)]
    path = folder / "load.wav"
    sf.write(path, audio, rate, subtype="PCM_16")
    return path, audio


def cli_texts(path: Path) -> list[str]:
    out = subprocess.run([*CLI, "transcribe", str(path), "--format", "jsonl"], capture_output=True, text=True,
                         timeout=300, check=True)
    return [r["text"] for r in map(json.loads, out.stdout.splitlines()) if r["type"] == "final"]


# ---- clients (in client processes) ---------------------------------------------------------------------
async def one_client(url, audio, rate, chunk, offset, timeout, go, connected):
    """Connect, wait for `go` (an asyncio future of the common start time t0), then stream on the schedule."""
    import aiohttp

    pieces = [audio[i:i + chunk].tobytes() for i in range(0, len(audio), chunk)]
    replies, texts = [], []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, max_msg_size=0) as ws:
            async def receive():
                async for msg in ws:
                    replies.append(time.time())
                    obj = json.loads(msg.data)
                    if obj.get("text"):
                        texts.append(obj["text"])

            receiver = asyncio.create_task(receive())
            await ws.send_str(json.dumps({"config": {"sample_rate": rate}}))
            connected.append(1)
            t0 = await go + offset
            due = [t0 + min(len(audio), (i + 1) * chunk) / rate for i in range(len(pieces))]  # last sample's time
            for piece, when in zip(pieces, due, strict=True):
                await asyncio.sleep(max(0.0, when - time.time()))
                await ws.send_bytes(piece)
            eof_at = time.time()
            await ws.send_str('{"eof": 1}')
            await asyncio.wait_for(receiver, timeout)
    latency = [r - d for r, d in zip(replies, due, strict=False)]
    return {"sent": len(audio), "latency": latency, "eof_to_final": replies[-1] - eof_at if replies else None,
            "replies": len(replies), "messages": len(pieces), "texts": texts}


def client_process(url, audio, rate, chunk, offsets, timeout, out, ready, start):
    """The clients of one process: all connect, say so on `ready`, and start together once `start` (a pipe
    end) gives t0, so that slow process start-up on a loaded machine does not count as latency."""
    async def all_clients():
        loop = asyncio.get_running_loop()
        go, connected = loop.create_future(), []
        tasks = [asyncio.create_task(one_client(url, audio, rate, chunk, o, timeout, go, connected)) for o in offsets]
        while len(connected) < len(tasks) and not any(t.done() for t in tasks):
            await asyncio.sleep(0.05)
        ready.put(len(connected))
        go.set_result(await loop.run_in_executor(None, start.recv))
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(all_clients())
    out.put([r if isinstance(r, dict) else {"error": repr(r)} for r in results])


# ---- the server ---------------------------------------------------------------------------------------
def cpu_seconds(root_pid: int) -> float:
    """utime + stime of a process and all its descendants, from /proc."""
    pids, total, tick = {root_pid}, 0.0, os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    grew = True
    while grew:
        new = {pid for pid, (ppid, _) in stats.items() if ppid in pids} - pids
        pids |= new
        grew = bool(new)
    for pid in pids:
        total += stats.get(pid, (0, 0))[1] / tick
    return total


def start_server(streams: int, workers: int):
    proc = subprocess.Popen([*CLI, "serve", "--port", "0", "--max-streams", str(streams + 8), "--workers",
                             str(workers), "--idle-timeout", "120"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    port, listening, deadline = None, 0, time.monotonic() + 120
    while listening < workers and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError("server exited before listening")
        if port is None and "http://127.0.0.1:" in line:
            port = int(line.split("http://127.0.0.1:")[1].split()[0])
        listening += "listening on" in line
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def busy_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "pcpu,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    return [" ".join(line.split())[:110] for line in out.splitlines()[1:6]]


def run_level(n: int, args, audio, rate, expected) -> dict:
    proc, port = start_server(n, args.workers)
    clients = []
    try:
        url = f"ws://127.0.0.1:{port}/ws"
        chunk = int(rate * args.chunk_ms / 1000)
        offsets = [(i / n) * args.chunk_ms / 1000 for i in range(n)]  # staggered: streams join at odd times
        load_before = os.getloadavg()
        ctx = mp.get_context("spawn")
        queue, ready = ctx.Queue(), ctx.Queue()
        procs, pipes = min(args.processes, n), []
        for p in range(procs):
            receiver, sender = ctx.Pipe(duplex=False)
            c = ctx.Process(target=client_process,
                            args=(url, audio, rate, chunk, offsets[p::procs], 120, queue, ready, receiver))
            c.start()
            clients.append(c)
            pipes.append(sender)
        for _ in clients:
            ready.get(timeout=120)
        t0 = time.time() + 0.5
        cpu0, wall0 = cpu_seconds(proc.pid), time.time()
        for pipe in pipes:
            pipe.send(t0)
        results = []
        deadline = time.monotonic() + len(audio) / rate + 180
        for _ in clients:
            results += queue.get(timeout=max(1.0, deadline - time.monotonic()))
        cpu, wall = cpu_seconds(proc.pid) - cpu0, time.time() - wall0
    finally:
        for c in clients:
            c.join(5)
            if c.is_alive():
                c.terminate()
        stop(proc)
    # each worker says on exit how many samples it received
    counted = sum(int(line.split("received ")[1].split()[0]) for line in proc.stderr.read().splitlines()
                  if "stopped" in line and "received " in line)
    ok = [r for r in results if "error" not in r]
    lat = np.array([x for r in ok for x in r["latency"]]) * 1000
    per = [np.array(r["latency"]) * 1000 for r in ok if r["latency"]]
    tenth = [max(1, len(x) // 10) for x in per]
    first = np.mean([x[:k].mean() for x, k in zip(per, tenth, strict=True)]) if per else float("nan")
    last = np.mean([x[-k:].mean() for x, k in zip(per, tenth, strict=True)]) if per else float("nan")
    eof = [r["eof_to_final"] * 1000 for r in ok if r["eof_to_final"] is not None]
    sent = sum(r["sent"] for r in ok)
    return {
        "streams": n, "errors": len(results) - len(ok) + (n - len(results)),
        "sent_minus_counted": sent - counted,
        "replies_missing": sum(r["messages"] + 1 - r["replies"] for r in ok),
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "latency_p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "lag_growth_ms": round(float(last - first), 1),
        "eof_to_final_p50_ms": round(float(np.median(eof)), 1) if eof else None,
        "eof_to_final_max_ms": round(float(np.max(eof)), 1) if eof else None,
        "server_cpu_cores": round(cpu / wall, 2),
        # contention-proof: CPU the server spent per second of audio; 1000 / this = streams one free core holds
        "server_cpu_ms_per_audio_s": round(1000 * cpu / max(sent / rate, 1e-9), 2),
        "transcripts_equal_cli": f"{sum(r['texts'] == expected for r in ok)}/{n}",
        "load_average_before": [round(x, 2) for x in load_before],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="10,50,100", help="comma-separated client counts N")
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per stream (the example, tiled)")
    parser.add_argument("--chunk-ms", type=float, default=100.0, help="audio per message")
    parser.add_argument("--processes", type=int, default=4, help="client processes the N clients are split over")
    parser.add_argument("--workers", type=int, default=1, help="server --workers")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path, audio = make_audio(args.seconds, Path(tmp))
        expected = cli_texts(path)
    rate = 16000
    report = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "cpus": os.cpu_count(),
              "busy_before": busy_processes(), "levels": []}
    print(f"# {report['cpus']} CPUs; busiest processes before the run:", *report["busy_before"], sep="\n#   ",
          file=sys.stderr)
    for n in [int(x) for x in args.streams.split(",")]:
        level = run_level(n, args, audio, rate, expected)
        report["levels"].append(level)
        print(json.dumps(level), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
