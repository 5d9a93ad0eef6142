"""The ASR task's bundle schema, in one place: the frontend's config, what an ASR bundle's config.json
holds, how a training checkpoint or config becomes one (with the task's defaults), how the model is built,
and what `swa-stream info` says about it. No torch at import: `info --config` must start fast.

A bundle config: {"frontend": FrontendConfig fields, "encoder": SWAConfig fields, "labels": the CTC
vocabulary, "end_silence_ms": zeros appended to every stream's end (see tasks/asr/model.py)}.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from swa_stream.config import SWAConfig, in_range, is_int
from swa_stream.errors import ConfigError
from swa_stream.tasks.registry import TaskSchema, field, finite, string_list

END_SILENCE_MS = 100.0  # the task's default; bundles that predate the field were trained with it too


def _samples(cfg: FrontendConfig, field: str) -> int:
    """A duration field in ms as a whole number of samples (a fractional window has no exact STFT)."""
    ms = getattr(cfg, field)
    if not isinstance(ms, (int, float)) or isinstance(ms, bool) or not 0 < ms < float("inf"):  # NaN fails too
        raise ConfigError(f"{field}: must be a positive number of milliseconds, got {ms!r}")
    n = ms * cfg.sample_rate / 1000
    if abs(n - round(n)) > 1e-6:
        raise ConfigError(f"{field}: {ms} ms is not a whole number of samples at {cfg.sample_rate} Hz")
    return round(n)


@dataclass
class FrontendConfig:
    """Fields of the frontend. `conv_channels` is the width of the subsampling convolutions."""

    sample_rate: int = 16000
    n_mels: int = 80
    win_ms: float = 25.0
    hop_ms: float = 10.0
    subsampling: int = 4
    d_model: int = 256
    conv_channels: int = 128
    running_mean_s: float = 0.0  # > 0: a streaming mean normaliser with this time constant (frontend.RunningMean)

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_mels", "d_model", "conv_channels"):
            value = getattr(self, name)
            if not is_int(value) or value <= 0:
                raise ConfigError(f"{name}: must be a positive integer, got {value!r}")
        s = self.subsampling
        if not is_int(s) or s < 2 or s & (s - 1):
            raise ConfigError(f"subsampling: must be a power of two >= 2 (one stride-2 conv per factor 2), got {s!r}")
        in_range("running_mean_s", self.running_mean_s, 0.0)  # seconds; 0: no running mean
        # A hop longer than the window would skip samples, and the stream buffer would have to discard them.
        if self.hop_samples > self.win_samples:
            raise ConfigError(f"hop_ms: must not exceed win_ms ({self.win_ms}), got {self.hop_ms}")

    @property
    def win_samples(self) -> int:
        return _samples(self, "win_ms")

    @property
    def hop_samples(self) -> int:
        return _samples(self, "hop_ms")

    @property
    def frames_per_second(self) -> float:
        """Output frames per second, e.g. the encoder's `frame_rate` (25.0 for a 10 ms hop and 4x)."""
        return self.sample_rate / self.hop_samples / self.subsampling

    @classmethod
    def from_dict(cls, data: dict) -> FrontendConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{unknown[0]}: not a field of FrontendConfig (known: {', '.join(sorted(known))})")
        return cls(**data)


def _as_dict(value) -> dict:
    """A config section as LightningCLI (a dict) or Python (the dataclass) left it in a checkpoint."""
    if isinstance(value, SWAConfig):
        return value.to_dict()
    return asdict(value) if hasattr(value, "__dataclass_fields__") else value


class ASRSchema(TaskSchema):
    kind, task_class, default_model, hparam_marker = "asr", "ASRTask", "asr-demo", "end_silence_ms"

    def safe_classes(self) -> list:
        return [SWAConfig, FrontendConfig]

    def from_task_args(self, args: dict) -> dict:
        encoder = _as_dict(args.get("encoder"))
        frontend = _as_dict(args.get("frontend"))
        if frontend is None and isinstance(encoder, dict):  # the task's default: the standard frontend, as wide
            frontend = {"d_model": encoder.get("d_model")}
        config = {"frontend": frontend, "encoder": encoder, "end_silence_ms": args.get("end_silence_ms")}
        if args.get("labels") is not None:
            config["labels"] = args["labels"]
        if args.get("lexicon") is not None:
            config["lexicon"] = args["lexicon"]
        return config

    def frontend(self, config: dict) -> FrontendConfig:
        return field(config, "frontend", FrontendConfig.from_dict, dict, nested=True)

    def parse(self, config: dict) -> dict:
        """A bundle config checked field by field (errors name the field): the dataclasses and values."""
        labels = field(config, "labels", _labels, list)
        return {
            "frontend": self.frontend(config),
            "encoder": self.encoder(config),
            "labels": labels,
            "end_silence_ms": field(config, "end_silence_ms", finite, (int, float), default=END_SILENCE_MS),
            "lexicon": field(config, "lexicon", lambda v: _lexicon(v, labels), list, default=None),
        }

    def build(self, config: dict):
        from swa_stream.tasks.asr.model import ASRModel

        c = self.parse(config)
        return ASRModel(c["frontend"], c["encoder"], c["labels"], c["end_silence_ms"], c["lexicon"])

    def model_config(self, model) -> dict:
        return {
            "frontend": asdict(model.frontend.cfg),
            "encoder": model.encoder.cfg.to_dict(),
            "labels": list(model.labels),
            "end_silence_ms": model.end_silence_ms,
            **({"lexicon": list(model.lexicon)} if model.lexicon is not None else {}),
        }

    def describe(self, config: dict, chunk_ms: float) -> list[str]:
        cfg, fe = self.encoder(config), self.frontend(config)
        stft_ms = (fe.win_samples - fe.hop_samples) * 1000 / fe.sample_rate
        ahead_ms = cfg.lookahead * 1000 / fe.frames_per_second
        return [
            f"frontend          {fe.n_mels} log-mel bins, {fe.win_ms:g} ms windows every {fe.hop_ms:g} ms, "
            f"{fe.subsampling}x subsampling: {fe.frames_per_second:g} frames/s"
            + (f", a running mean over {fe.running_mean_s:g} s taken out" if fe.running_mean_s else ""),
            f"latency           {chunk_ms + stft_ms + ahead_ms:g} ms at {chunk_ms:g} ms chunks: chunk "
            f"{chunk_ms:g} + STFT window {stft_ms:g} + lookahead {ahead_ms:g} ({cfg.lookahead} frames), "
            "before compute (algorithmic)",
        ] + ([f"lexicon           {' '.join(lexicon)} (misspelt words snap to these)"]
             if (lexicon := config.get("lexicon")) else [])


def _lexicon(value, labels: list[str]) -> list[str]:
    from swa_stream.tasks.asr.text import check_lexicon  # pure Python

    return check_lexicon(string_list(value), labels)


def _labels(value) -> list[str]:
    from swa_stream.tasks.asr.text import check_labels  # pure Python

    return check_labels(string_list(value))


SCHEMA = ASRSchema()
