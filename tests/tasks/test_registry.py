"""Each task's bundle schema, found through the registry: every shipped model loads through it and its config
round-trips; training arguments get the task's defaults in one place; checkpoints find their task."""

import pytest
import torch

from swa_stream.bundle import load_bundle
from swa_stream.errors import ConfigError, SWAStreamError
from swa_stream.pipelines.bundles import bundled_models, load_model, model_dir
from swa_stream.tasks.registry import for_hparams, for_task, schema

ENCODER = {"d_model": 32, "n_heads": 2, "n_layers": 2, "window": [4, 1]}


@pytest.mark.parametrize("name", bundled_models())
def test_every_shipped_model_loads_by_name_and_its_config_round_trips(name):
    from swa_stream.bundle import load_bundle_config

    folder = model_dir(name, "dna")
    kind, _ = load_bundle_config(folder)
    task = schema(kind)
    model = load_model(name, kind)
    again = task.build(task.model_config(model))
    assert task.model_config(again) == task.model_config(model)
    _, weights = load_bundle(folder)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())


def test_the_default_model_of_each_task_is_shipped():
    assert {schema(k).default_model for k in ("asr", "dna")} <= set(bundled_models())


def test_training_arguments_get_the_task_defaults():
    asr = schema("asr").from_task_args({"encoder": ENCODER, "labels": ["<blank>", " ", "a"]})
    assert asr["frontend"] == {"d_model": 32}  # the standard frontend, as wide as the encoder
    assert schema("asr").parse(asr)["end_silence_ms"] == 100.0
    assert schema("asr").parse(asr)["lexicon"] is None  # open vocabulary unless the task names one
    with_lexicon = schema("asr").from_task_args({"encoder": ENCODER, "labels": ["<blank>", " ", "a"], "lexicon": ["a"]})
    assert schema("asr").build(with_lexicon).config()["lexicon"] == ["a"]  # what export writes into the bundle
    assert schema("dna").from_task_args({"encoder": ENCODER})["stem_kernel"] == 9
    assert schema("dna").stem_kernel({"encoder": ENCODER}) == 0  # a bundle from before the stem had none


def test_checkpoints_find_their_task_by_class_path_or_by_their_own_argument():
    assert for_hparams({"_class_path": "swa_stream.tasks.asr.module.ASRTask"}).kind == "asr"
    assert for_hparams({"encoder": ENCODER, "track_weight": 0.2}).kind == "dna"
    assert for_hparams({"encoder": ENCODER}) is None and for_task("x.OtherTask") is None


def test_a_kind_no_task_knows_is_one_line():
    with pytest.raises(SWAStreamError, match="holds a 'protein' model; this swa-stream knows asr, dna"):
        schema("protein")


@pytest.mark.parametrize("config, message", [
    ({"encoder": ENCODER, "classes": "ab"}, "classes: expected a list, got 'ab'"),
    ({"encoder": ENCODER, "classes": ["a", "b"], "tracks": [1]}, "tracks: expected a list of strings"),
    ({"encoder": {**ENCODER, "n_heads": 3}, "classes": ["a", "b"]}, "encoder.d_model: 32 is not divisible"),
    ({"classes": ["a", "b"]}, "encoder: missing"),
])
def test_bad_dna_configs_name_the_field(config, message):
    with pytest.raises(ConfigError, match=message):
        schema("dna").build(config)


def test_bad_asr_configs_name_the_field():
    good = schema("asr").from_task_args({"encoder": ENCODER, "labels": ["<blank>", " ", "a"]})
    for edit, message in (({"end_silence_ms": float("nan")}, "end_silence_ms: must be a finite number"),
                          ({"labels": ["a", " "]}, "labels: index 0 must be '<blank>'"),
                          ({"frontend": {"d_model": 32, "hop_ms": "10"}}, "frontend.hop_ms: must be a positive")):
        with pytest.raises(ConfigError, match=message):
            schema("asr").build({**good, **edit})
