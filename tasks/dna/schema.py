"""The DNA task's bundle schema, in one place: what a DNA bundle's config.json holds, how a training
checkpoint or config becomes one (with the task's defaults), how the model is built, and what
`swa-stream info` says about it. No torch at import: `info --config` must start fast.

A bundle config: {"encoder": SWAConfig fields, "classes": the record classes, "tracks": the per-position
tracks (default one, DEFAULT_TRACK "signal"), "stem_kernel": the width of the convolutional stem (0: none),
optionally "record_length": the one length of the records a classifier was trained on (81 for ecoli-promoters),
which `score-fasta --windows` scans longer sequences with, and "absolute_positions": true where the model adds a
learned vector per position of such a record (default false)}.
"""

from __future__ import annotations

from swa_stream.config import is_int
from swa_stream.errors import ConfigError
from swa_stream.tasks.registry import TaskSchema, field, span_text, string_list

DEFAULT_STEM_KERNEL = 9  # what GenomicsTask builds unless told otherwise
BUNDLE_STEM_KERNEL = 0  # bundles that predate the field had no stem
DEFAULT_TRACK = "signal"  # the one per-position track's name unless a task names it


def _record_length(value) -> int | None:
    if value is not None and (not is_int(value) or value < 1):
        raise ConfigError(f"must be a length >= 1 (bp), or null, got {value!r}")
    return value


def _stem_kernel(value) -> int:
    if not is_int(value) or value < 0 or (value and value % 2 == 0):
        raise ConfigError(f"must be 0 (no stem) or an odd width >= 1, got {value!r}")
    return value


class DNASchema(TaskSchema):
    kind, task_class, default_model, hparam_marker = "dna", "GenomicsTask", "bacteria-genes", "track_weight"

    def from_task_args(self, args: dict) -> dict:
        encoder = args.get("encoder")
        config = {"encoder": encoder.to_dict() if hasattr(encoder, "to_dict") else encoder,
                  "stem_kernel": args.get("stem_kernel", DEFAULT_STEM_KERNEL)}
        for name, key in (("labels", "classes"), ("tracks", "tracks")):
            if args.get(name) is not None:
                config[key] = args[name]
        if args.get("track_name") is not None:
            config["tracks"] = [args["track_name"]]
        if args.get("record_length") is not None:
            config["record_length"] = args["record_length"]
        if args.get("absolute_positions"):
            config["absolute_positions"] = True
        return config

    def parse(self, config: dict) -> dict:
        """A bundle config checked field by field (errors name the field)."""
        return {
            "encoder": self.encoder(config),
            "classes": field(config, "classes", string_list, list),
            "tracks": field(config, "tracks", string_list, list, default=None),
            "stem_kernel": self.stem_kernel(config),
            "record_length": field(config, "record_length", _record_length, default=None),
            "absolute_positions": field(config, "absolute_positions", None, bool, default=False),
        }

    def stem_kernel(self, config: dict) -> int:
        return field(config, "stem_kernel", _stem_kernel, int, default=BUNDLE_STEM_KERNEL)

    def build(self, config: dict):
        from swa_stream.tasks.dna.model import DNAModel

        c = self.parse(config)
        return DNAModel(c["encoder"], c["classes"], c["tracks"], stem_kernel=c["stem_kernel"],
                        record_length=c["record_length"], absolute_positions=c["absolute_positions"])

    def model_config(self, model) -> dict:
        config = {"encoder": model.cfg.to_dict(), "classes": list(model.classes), "tracks": list(model.tracks),
                  "stem_kernel": 0 if model.stem is None else model.stem.kernel}
        if model.record_length is not None:
            config["record_length"] = model.record_length
        if model.absolute_positions:
            config["absolute_positions"] = True
        return config

    def describe(self, config: dict, chunk_ms: float) -> list[str]:
        cfg, kernel = self.encoder(config), self.stem_kernel(config)
        lines = []
        if "classes" in config:  # a bundle (a training config gets its classes from the data)
            classes, tracks = config["classes"] or [], config.get("tracks") or [DEFAULT_TRACK]
            what = f"record classes {', '.join(classes)}" if classes else "no record classes (a track model)"
            lines.append(f"outputs           {what}; per-position track{'s' if len(tracks) > 1 else ''} "
                         f"{', '.join(tracks)}")
        n = field(config, "record_length", _record_length, default=None)
        if n:
            lines.append(f"trained on        {n} bp records; score-fasta --windows scans longer sequences "
                         f"{n} bp at a time")
            if field(config, "absolute_positions", None, bool, default=False):
                lines.append(f"positions         a learned vector for each of the {n} positions joins each base's "
                             "embedding (aligned windows)")
        if not kernel:
            return lines
        half = kernel // 2
        left, right = cfg.receptive_field()
        return lines + [
            f"stem              width-{kernel} convolution: {half} positions each way before the encoder",
            f"model field       {span_text(left + half, cfg)} back, {span_text(right + half, cfg)} ahead "
            f"({left + right + 2 * half + 1} positions in all)",
        ]


SCHEMA = DNASchema()
