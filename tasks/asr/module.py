"""ASRTask: CTC training of ASRModel, with SpecAugment, fixed feature statistics, and WER / CER."""

from __future__ import annotations

import random
from dataclasses import replace

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.text import CharErrorRate, WordErrorRate

from swa_stream.config import SWAConfig, in_range
from swa_stream.errors import SWAStreamError
from swa_stream.tasks.asr.audio import read_audio
from swa_stream.tasks.asr.decoder import greedy_decode
from swa_stream.tasks.asr.frontend import FrontendConfig
from swa_stream.tasks.asr.model import ASRModel
from swa_stream.tasks.optim import adamw_warmup_cosine, check_training_numbers


class SpecAugment(nn.Module):
    """Masks bands of normalised log-mel features (B, F, n_mels) with 0 (the training mean), training only:
    `freq_masks` bands of up to `freq_width` mel bins and `time_masks` spans of up to `time_width` x the
    utterance's frames each. Spans stay short so that whole words are rarely erased.

    `freq_warp` > 0 first stretches or squeezes each utterance's mel axis by a factor drawn from
    1 +- freq_warp (bin k takes the value at bin k x factor, linearly interpolated, the top bin repeated
    past the end), a vocal-tract-length perturbation (Jaitly and Hinton, 2013): formants move as they do
    between speakers, while pitch and timing stay."""

    def __init__(self, freq_masks: int = 2, freq_width: int = 15, time_masks: int = 2, time_width: float = 0.05,
                 freq_warp: float = 0.0):
        super().__init__()
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width
        self.freq_warp = freq_warp

    @staticmethod
    def warp(feats: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
        """(B, F, M) features, (B,) factors: bin k of row b takes the value at bin k x factors[b]."""
        m = feats.shape[-1]
        if m < 2:
            return feats
        where = (torch.arange(m, device=feats.device) * factors[:, None]).to(feats.dtype).clamp(0, m - 1)
        lo = where.floor().long().clamp(max=m - 2)
        frac = (where - lo)[:, None, :]
        idx = lo[:, None, :].expand(-1, feats.shape[1], -1)
        below, above = feats.gather(2, idx), feats.gather(2, idx + 1)
        return below + frac * (above - below)

    def forward(self, feats: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return feats
        if self.freq_warp:
            factors = 1 + (torch.rand(feats.shape[0], device=feats.device) * 2 - 1) * self.freq_warp
            feats = self.warp(feats, factors)
        if not (self.freq_masks or self.time_masks):
            return feats
        b, t, m = feats.shape
        keep = torch.ones(b, t, m, dtype=torch.bool, device=feats.device)
        for row, n in enumerate(frames.tolist()):
            for _ in range(self.freq_masks):
                width = int(torch.randint(0, min(self.freq_width, m) + 1, ()))
                start = int(torch.randint(0, m - width + 1, ()))
                keep[row, :, start : start + width] = False
            for _ in range(self.time_masks):
                width = int(torch.randint(0, int(self.time_width * n) + 1, ()))
                start = int(torch.randint(0, max(1, n - width + 1), ()))
                keep[row, start : start + width] = False
        return feats * keep.to(feats.dtype)


class ASRTask(L.LightningModule):
    """CTC over characters. `labels` (the vocabulary) is linked from the data; `frontend` defaults to the
    standard 80-mel, 4x frontend with the encoder's width. At the start of fit, the frontend's feature
    statistics are estimated from `norm_utterances` training utterances (unless the model already holds
    statistics, e.g. when resuming), so they are fixed and travel with the weights. `init_from`, an ASR
    bundle, starts from its weights and statistics (fine-tuning, or a variant of a plain model: the
    variant's own parameters keep their initial values). `training_data` (a list of {name, licence, source})
    says what the model learned from; `export` copies it into the bundle. `lexicon`, the task's closed
    vocabulary, also goes into the bundle: the decoder snaps misspelt words to it (tasks/asr/decoder.py);
    training and its WER metrics do not use it."""

    def __init__(
        self,
        encoder: SWAConfig,
        frontend: FrontendConfig | None = None,
        labels: list[str] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 500,
        end_silence_ms: float = 100.0,
        norm_utterances: int = 300,
        freq_masks: int = 2,
        freq_width: int = 15,
        time_masks: int = 2,
        time_width: float = 0.05,
        freq_warp: float = 0.0,
        init_from: str | None = None,
        training_data: list[dict] | None = None,
        lexicon: list[str] | None = None,
    ):
        super().__init__()
        if not labels:
            raise ValueError("labels: the vocabulary is required (the CLI links it from data.labels)")
        check_training_numbers(lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps)
        in_range("end_silence_ms", end_silence_ms, 0.0)
        for name, value in (("norm_utterances", norm_utterances), ("freq_masks", freq_masks),
                            ("freq_width", freq_width), ("time_masks", time_masks)):
            in_range(name, value, 0, integer=True)
        in_range("time_width", time_width, 0.0, 1.0)
        in_range("freq_warp", freq_warp, 0.0, 0.5)
        self.save_hyperparameters()
        encoder = SWAConfig.from_dict(encoder) if isinstance(encoder, dict) else encoder
        if frontend is None:
            frontend = FrontendConfig(d_model=encoder.d_model)
        elif isinstance(frontend, dict):
            frontend = FrontendConfig(**frontend)
        self.model = ASRModel(frontend, encoder, labels, end_silence_ms, lexicon)
        if init_from:
            self._load_initial_weights(init_from)
        self.augment = SpecAugment(freq_masks, freq_width, time_masks, time_width, freq_warp)
        self.val_wer, self.val_cer = WordErrorRate(), CharErrorRate()
        self.test_wer, self.test_cer = WordErrorRate(), CharErrorRate()

    def _load_initial_weights(self, directory: str) -> None:
        from swa_stream.attention import VARIANT_PARAMETERS
        from swa_stream.bundle import load_bundle, load_weights

        config, weights = load_bundle(directory, kind="asr")
        old, new = list(config.get("labels") or []), self.model.labels
        if old != new:
            if old != new[: len(old)]:
                raise SWAStreamError(f"{directory}: init_from has other labels than the data")
            weights = self._grow_head(weights, len(new) - len(old))
        weights = self._grow_layers(weights, config, directory)
        load_weights(self.model, weights, f"{directory} (init_from)", may_lack=VARIANT_PARAMETERS)

    def _grow_layers(self, weights: dict, config: dict, directory: str) -> dict:
        """A bundle with fewer encoder layers than ours, whose windows are the first of ours: keep its
        layers and append ours as identities (each new block's attention output and second ffn product start
        at zero, so its residual adds nothing), so the deeper model begins by transcribing exactly what the
        bundle did and training grows it from there."""
        ours = self.model.encoder.cfg
        theirs = SWAConfig.from_dict(config["encoder"])
        n = theirs.n_layers
        if n >= ours.n_layers:
            return weights
        first = replace(ours, n_layers=n, window=ours.window[:n], dilation=ours.dilation[:n],
                        downsample=ours.downsample[:n])
        if first.to_dict() != theirs.to_dict() or any(rate != 1 for rate in ours.downsample[n:]):
            raise SWAStreamError(f"{directory}: init_from has {n} layers; a deeper model must be the same encoder "
                                 f"for its first {n} layers (every setting, and windows {list(theirs.window)}), "
                                 "with new layers at full rate")
        weights = dict(weights)
        for name, value in self.model.state_dict().items():
            parts = name.split(".")
            if parts[:2] != ["encoder", "blocks"] or int(parts[2]) < theirs.n_layers:
                continue
            silent = parts[3:5] in (["attn", "out"], ["ffn", "2"])
            weights[name] = torch.zeros_like(value) if silent else value.clone()
        return weights

    @staticmethod
    def _grow_head(weights: dict, extra: int) -> dict:
        """A bundle whose labels are a prefix of ours (e.g. one made before the garbage label): keep its CTC
        rows and append `extra` rows that start silent (zero weights, a bias 4 nats under the blank's), so
        the fine-tuned model begins by transcribing exactly what the bundle did."""
        weights = dict(weights)
        w, b = weights["head.weight"], weights["head.bias"]
        weights["head.weight"] = torch.cat([w, w.new_zeros(extra, w.shape[1])])
        weights["head.bias"] = torch.cat([b, b.new_full((extra,), float(b[0]) - 4.0)])
        return weights

    # ---- feature statistics ----------------------------------------------------------------------
    def _norm_is_default(self) -> bool:
        norm = self.model.frontend.norm
        return bool((norm.mean == 0).all() and (norm.std == 1).all())

    def _feature_batches(self, n: int):
        """Log-mel features of up to n training utterances: a seeded choice, the same on every rank."""
        dm = self.trainer.datamodule
        logmel, rate = self.model.frontend.logmel, self.model.sample_rate
        if hasattr(dm, "utterances"):
            utts = dm.utterances("train")
            for i in random.Random(0).sample(range(len(utts)), min(n, len(utts))):
                yield logmel(read_audio(utts[i].path, rate)[None].to(self.device))
            return
        seen = 0
        for batch in dm.train_dataloader():
            yield logmel(batch["audio"].to(self.device), batch["lengths"].to(self.device))
            seen += len(batch["lengths"])
            if seen >= n:
                return

    def on_fit_start(self) -> None:
        if self.hparams.norm_utterances <= 0 or not self._norm_is_default() or self.trainer.datamodule is None:
            return
        norm = self.model.frontend.norm
        with torch.no_grad():
            norm.estimate(self._feature_batches(self.hparams.norm_utterances))
            # Ranks agree already (same seeded choice); the broadcast guards other data modules.
            norm.mean.copy_(self.trainer.strategy.broadcast(norm.mean, src=0))
            norm.std.copy_(self.trainer.strategy.broadcast(norm.std, src=0))

    # ---- steps -----------------------------------------------------------------------------------
    def _loss(self, batch: dict, augment: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        log_probs, out_lengths = self.model(batch["audio"], batch["lengths"], self.augment if augment else None)
        loss = F.ctc_loss(
            log_probs.transpose(0, 1).float(), batch["targets"], out_lengths, batch["target_lengths"],
            blank=0, zero_infinity=True,
        )
        return loss + self.model.encoder.auxiliary_loss(), log_probs, out_lengths

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._loss(batch, augment=True)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["lengths"]))
        return loss

    def _evaluate(self, batch: dict, wer, cer, prefix: str) -> None:
        loss, log_probs, out_lengths = self._loss(batch, augment=False)
        hyps = greedy_decode(log_probs, out_lengths, self.model.labels)
        wer.update(hyps, batch["texts"])
        cer.update(hyps, batch["texts"])
        n = len(batch["lengths"])
        self.log(f"{prefix}loss", loss, sync_dist=True, batch_size=n)
        self.log(f"{prefix}wer", wer, prog_bar=True, batch_size=n)
        self.log(f"{prefix}cer", cer, batch_size=n)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, self.val_wer, self.val_cer, "val/")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, self.test_wer, self.test_cer, "test/")

    def configure_optimizers(self):
        return adamw_warmup_cosine(self, self.hparams.lr, self.hparams.weight_decay, self.hparams.warmup_steps)
