"""`swa-stream info`: what an encoder config costs and sees, computed exactly from SWAConfig."""

from __future__ import annotations

from pathlib import Path

import yaml

from swa_stream.config import SWAConfig
from swa_stream.errors import ConfigError, SWAStreamError
from swa_stream.pipelines.safe_output import atomic_path, check_output_file, first_line
from swa_stream.shapes import layer_bytes, state_bytes
from swa_stream.tasks.registry import for_task, schema
from swa_stream.tasks.registry import span_text as _span

ENCODER_KEYS = {"d_model", "n_heads", "n_layers", "window"}


def _find_encoder_sections(node, path=()):
    """Yield (dotted path, mapping) for every mapping that looks like an SWAConfig."""
    if isinstance(node, dict):
        if ENCODER_KEYS <= node.keys():
            yield ".".join(path), node
        for key, value in node.items():
            yield from _find_encoder_sections(value, path + (str(key),))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _find_encoder_sections(value, path + (str(i),))


def _read_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SWAStreamError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SWAStreamError(f"{path}: cannot read: {err}") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where else ""
        raise SWAStreamError(f"{path}: not valid YAML{line}") from None


def load_encoder_config(path: str | Path) -> SWAConfig:
    """Read the encoder section of a YAML file: SWAConfig fields at the top level, or one mapping with
    d_model, n_heads, n_layers and window anywhere inside (e.g. a LightningCLI `model.init_args.encoder`)."""
    path = Path(path)
    return _encoder_section(path, _read_yaml(path))


def _encoder_section(path: Path, data) -> SWAConfig:
    sections = list(_find_encoder_sections(data))
    if not sections:
        raise SWAStreamError(
            f"{path}: no encoder section (a mapping with {', '.join(sorted(ENCODER_KEYS))})"
        )
    if len(sections) > 1:
        raise SWAStreamError(f"{path}: several encoder sections ({', '.join(p for p, _ in sections)})")
    where, section = sections[0]
    try:
        return SWAConfig.from_dict(section)
    except (ConfigError, TypeError) as err:
        prefix = f"{path}: {where}." if where else f"{path}: "
        raise SWAStreamError(f"{prefix}{err}") from None


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _runs(windows: list[tuple[int, int]]) -> str:
    """(16, 0) x 2, (32, 1) x 4 ..."""
    runs: list[list] = []
    for w in windows:
        if runs and runs[-1][0] == w:
            runs[-1][1] += 1
        else:
            runs.append([w, 1])
    return ", ".join(f"({a}, {b}) x {n}" if n > 1 else f"({a}, {b})" for (a, b), n in runs)


def _variant_lines(cfg: SWAConfig) -> list[str]:
    parts = []
    if any(d > 1 for d in cfg.dilations):
        parts.append(f"dilation {', '.join(map(str, cfg.dilations))}")
    if any(s > 1 for s in cfg.strides):
        parts.append(f"rates 1/{', 1/'.join(map(str, cfg.rates))} (downsample {', '.join(map(str, cfg.strides))})")
    if cfg.adaptive_span:
        parts.append(f"adaptive span (ramp {cfg.span_ramp}, penalty {cfg.span_penalty:g})")
    lines = [f"variants          {'; '.join(parts)}"] if parts else []
    reach = []
    if cfg.global_tokens:
        reach.append(f"{cfg.global_tokens} global token(s) per layer summarise every earlier position")
    if cfg.sink_tokens:
        reach.append(f"the first {cfg.sink_tokens} positions of each layer's input (sinks) stay visible")
    if cfg.has_extras:
        lines.append(f"beyond the field  {'; '.join(reach)}: overlap-stitching cannot reproduce this, streaming can")
    return lines


def describe_spans(cfg: SWAConfig, spans: list[list[int]]) -> list[str]:
    """Learned adaptive spans (keys back per head, per layer) and the state they save."""
    full = state_bytes(cfg)
    trimmed = sum(layer_bytes(cfg, i, cache_left=max(heads)) for i, heads in enumerate(spans))
    per_head = sum(sum(layer_bytes(cfg, i, cache_left=h) for h in heads) / len(heads) for i, heads in enumerate(spans))
    lines = [
        f"{'learned spans' if i == 0 else '':<18}layer {i}: {', '.join(map(str, heads))} keys back per head "
        f"(of {cfg.reaches[i][0]})"
        for i, heads in enumerate(spans)
    ]
    lines.append(
        f"trimmed state     {_bytes(trimmed)} per stream in float32, {100 * (1 - trimmed / full):.0f}% less than the "
        f"full windows' {_bytes(full)} (each layer keeps its widest head; {_bytes(round(per_head))} if every head kept "
        "only its own span)"
    )
    return lines


def describe(cfg: SWAConfig) -> str:
    left, right = cfg.receptive_field()
    variant_columns = any(d > 1 for d in cfg.dilations) or any(s > 1 for s in cfg.strides)
    lines = [
        f"encoder           {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads of "
        f"{cfg.head_dim}, feed-forward {cfg.ffn_dim}",
        f"windows           (left, right) per layer: {_runs(cfg.windows)}",
        f"receptive field   {_span(left, cfg)} back, {_span(right, cfg)} ahead "
        f"({left + right + 1} positions in all)",
        f"lookahead latency {_span(cfg.lookahead, cfg)}: step emits position t after receiving "
        f"t + {cfg.lookahead}",
        f"state per stream  {_bytes(state_bytes(cfg))} in float32 ({_bytes(state_bytes(cfg, 2))} in "
        f"bf16), fixed for any stream length",
        f"parameters        {cfg.param_count():,}",
        f"FLOPs / position  {cfg.flops_per_position() / 1e6:,.2f} M",
        *_variant_lines(cfg),
        "",
        "layer  window (left, right)" + ("  dilation  rate" if variant_columns else "")
        + "  receptive field (left, right)  cached keys  state (float32)",
    ]
    shown = range(cfg.n_layers)
    if cfg.n_layers > 16:  # the plot shows the whole growth; the table keeps the ends
        shown = [*range(4), None, *range(cfg.n_layers - 3, cfg.n_layers)]
    for i in shown:
        if i is None:
            lines.append(f"{'...':>5}")
            continue
        w_left, w_right = cfg.windows[i]
        field_left, field_right = cfg.receptive_field(i + 1)
        rate = f"  {cfg.dilations[i]:>8}  {'1/' + str(cfg.rates[i]):>4}" if variant_columns else ""
        lines.append(
            f"{i:>5}  {f'({w_left}, {w_right})':>20}{rate}  {f'({field_left}, {field_right})':>29}  "
            f"{sum(cfg.reaches[i]):>11}  {_bytes(layer_bytes(cfg, i)):>15}"
        )
    return "\n".join(lines)


def _is_image(path: Path) -> bool:
    """An existing file a plot may replace: an image matplotlib writes (PNG, SVG, PDF), not anything else."""
    head = first_line(path, 64)
    return head.startswith((b"\x89PNG", b"%PDF", b"<?xml", b"<svg", b"\xff\xd8", b"GIF8", b"%!PS"))


def plot_receptive_field(cfg: SWAConfig, out: str | Path, title: str = "") -> None:
    """Draw the field's growth layer by layer: the cone of input positions that reach one output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(range(cfg.n_layers + 1))
    lefts = [-cfg.receptive_field(n)[0] for n in layers]
    rights = [cfg.receptive_field(n)[1] for n in layers]
    scale = 1.0 if cfg.frame_rate is None else 1.0 / cfg.frame_rate
    unit = "input positions" if cfg.frame_rate is None else cfg.frame_unit
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.fill_betweenx(layers, [v * scale for v in lefts], [v * scale for v in rights], alpha=0.3)
    ax.plot([v * scale for v in lefts], layers, marker="o", label="left edge (past)")
    ax.plot([v * scale for v in rights], layers, marker="o", label="right edge (lookahead)")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"offset from the output position ({unit})")
    ax.set_ylabel("layer")
    ax.set_title(title or f"Receptive field of {cfg.n_layers} SWA layers: {lefts[-1]}..+{rights[-1]} positions")
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=120, format=Path(out).suffix.lstrip(".").lower() or "png")
    except ValueError as err:  # a format matplotlib does not write
        raise SWAStreamError(f"{out}: cannot write the plot: {err}") from None
    finally:
        plt.close(fig)


def describe_task(kind: str | None, task: dict, where: str, chunk_ms: float = 160.0) -> list[str]:
    """What a task's model adds around its encoder (its schema says), for a bundle config or the config that
    `from_task_args` made of a training YAML; `where` names the file for errors."""
    if kind is None or kind == "encoder":
        return []
    try:
        return schema(kind).describe(task, chunk_ms)
    except SWAStreamError as err:
        raise SWAStreamError(f"{where}: {err}") from None


def describe_training_data(entries) -> list[str]:
    """What a bundle (or a training config) says its model learned from, and under which licence."""
    if not isinstance(entries, list):
        return []
    lines = []
    for entry in entries:
        if isinstance(entry, dict):
            fields = [str(entry[k]) for k in ("name", "labels", "source") if entry.get(k)]
            licence = f" (licence: {entry['licence']})" if entry.get("licence") else ""
            lines.append(f"{'training data' if not lines else '':<18}{'; '.join(fields)}{licence}")
    return lines


def _task_of_yaml(data) -> tuple[str | None, dict]:
    """(bundle kind, bundle-like config) of a LightningCLI config's `model` section, the task's defaults where
    unset; (None, {}) for an encoder-only config or an unknown task."""
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        return None, {}
    task = for_task(model.get("class_path", ""))
    args = model.get("init_args") or {}
    if task is None or not isinstance(args, dict):
        return None, {}
    config = task.from_task_args(args)
    if args.get("training_data"):  # what export copies into the bundle
        config["training_data"] = args["training_data"]
    return task.kind, config


def _learned_spans(model: Path, cfg: SWAConfig) -> list[list[int]]:
    from safetensors import safe_open

    from swa_stream.attention import span_reach

    path = model / "model.safetensors"
    try:
        with safe_open(str(path), framework="pt") as f:
            names = {name.split("blocks.")[-1].split(".")[0]: name for name in f.keys() if name.endswith("attn.span")}
            spans = [f.get_tensor(names[str(i)]) for i in range(cfg.n_layers)]
    except (OSError, KeyError, ValueError) as err:
        raise SWAStreamError(f"{path}: cannot read the learned spans ({err})") from None
    return [span_reach(z, cfg.reaches[i][0], cfg.span_ramp) for i, z in enumerate(spans)]


def load(config: str | None = None, model: str | None = None) -> tuple[SWAConfig, str | None, dict, str, Path]:
    """(encoder config, task kind, task config, what was read, the file) from a YAML config or a bundle."""
    if model is not None:
        from swa_stream.bundle import load_bundle_config
        from swa_stream.pipelines.bundles import model_dir

        folder = model_dir(model, "dna")
        kind, bundle = load_bundle_config(folder)
        where = folder / "config.json"
        cfg = _encoder_section(where, bundle if kind == "encoder" else bundle.get("encoder"))
        task = dict(bundle) if kind != "encoder" else {}
        if cfg.adaptive_span:
            task["spans"] = _learned_spans(folder, cfg)
        return cfg, kind, task, f"model             {model}", where
    path = Path(config)
    data = _read_yaml(path)
    kind, task = _task_of_yaml(data)
    return _encoder_section(path, data), kind, task, f"config            {config}", path


def run(config: str | None = None, plot: str | None = None, model: str | None = None, chunk_ms: float = 160.0) -> None:
    if not 0 < chunk_ms < float("inf"):  # NaN fails too
        raise SWAStreamError(f"--chunk-ms: must be a positive number of milliseconds, got {chunk_ms:g}")
    cfg, kind, task, source, where = load(config, model)
    if plot is not None:  # before the work, and never over the config or model that was read
        inputs = [Path(config)] if config else [where.parent / name for name in ("config.json", "model.safetensors")]
        check_output_file(plot, "--plot", inputs, [], looks_like=_is_image, kind="plot image")
    extras = describe_task(kind, task, where, chunk_ms)
    if task.get("spans"):
        extras += describe_spans(cfg, task["spans"])
    extras += describe_training_data(task.get("training_data"))
    print(source)
    print(describe(cfg))
    if extras:
        print("\n" + "\n".join(extras))
    if plot:
        name = Path(model).name if model else Path(config).name
        plot_receptive_field(cfg, plot, title=f"Receptive field by layer: {name}")
        print(f"plot              {plot}")
