"""Config values are checked when the config is read (``seglab.config_schema``): a bad value
stops before anything is built, with its full key, the value given and what is allowed, all
bad values in one message; every config the repository ships passes."""

from __future__ import annotations

import re

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from helpers import CONF, compose_cfg
from seglab import pipeline
from seglab.config import check_config
from seglab.config_schema import RULES, check_values
from seglab.errors import InputError
from seglab.reproduce.training import budget_plan, plan_overrides

POSITIVE = "must be a positive integer"
NUMBER_GT0 = "must be a number > 0"
LIMITS = r"an integer >= 0 \(batches\) or a number in \[0.0, 1.0\]"

# (training overrides, the message's start: full key, value given, allowed values)
BAD_TRAIN = [
    ("data.batch_size=abc", rf"data.batch_size=abc: {POSITIVE} \(e.g. data.batch_size=8\)"),
    ("data.batch_size=0", f"data.batch_size=0: {POSITIVE}"),
    ("data.batch_size=-2", f"data.batch_size=-2: {POSITIVE}"),
    ("data.batch_size=true", f"data.batch_size=true: {POSITIVE}"),  # a bool is not 1
    ("data.batch_size=8.0", f"data.batch_size=8.0: {POSITIVE}"),
    ("data.batch_size='8'", f"data.batch_size='8': {POSITIVE}"),  # a string, quoted
    ("data.eval_batch_size=0", f"data.eval_batch_size=0: {POSITIVE}"),
    ("optimizer.lr=-1", rf"optimizer.lr=-1: {NUMBER_GT0} \(e.g. optimizer.lr=0.001\)"),
    ("optimizer.lr=abc", f"optimizer.lr=abc: {NUMBER_GT0}"),
    ("optimizer.lr=0", f"optimizer.lr=0: {NUMBER_GT0}"),
    ("optimizer.lr=nan", f"optimizer.lr=nan: {NUMBER_GT0}"),
    ("optimizer.weight_decay=-0.1", "optimizer.weight_decay=-0.1: must be a number >= 0"),
    ("trainer.max_epochs=-5", r"trainer.max_epochs=-5: must be an integer >= -1 \(-1: no limit\)"),
    ("+trainer.max_steps=-2", "trainer.max_steps=-2: must be an integer >= -1"),
    ("data.crop_size=0", f"data.crop_size=0: {POSITIVE}"),
    ("data.num_workers=-1", "data.num_workers=-1: must be an integer >= 0"),
    ("data.val_subset=0", f"data.val_subset=0: {POSITIVE}"),
    ("inference.overlap=1.5", r"inference.overlap=1.5: must be a number in \[0, 1\)"),
    ("inference.window=0", r"inference.window=0: must be a positive integer or \[height, width\]"),
    ("inference.scales=[0,1]", r"inference.scales=\[0, 1\]: must be a list of numbers > 0"),
    ("inference.mode=fast", "inference.mode=fast: must be whole or slide"),
    ("inference.flip=abc", "inference.flip=abc: must be true or false"),
    ("+trainer.limit_train_batches=1.5", f"trainer.limit_train_batches=1.5: must be {LIMITS}"),
    ("+trainer.limit_val_batches=-1", f"trainer.limit_val_batches=-1: must be {LIMITS}"),
    ("+trainer.val_check_interval=0", "trainer.val_check_interval=0: must be an integer >= 1"),
    ("trainer.accumulate_grad_batches=0", f"trainer.accumulate_grad_batches=0: {POSITIVE}"),
    ("+trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1: must be a number >= 0"),
    ("trainer.precision=15", "trainer.precision=15: must be one of 32-true, bf16-mixed"),
    ("trainer.devices=0", "trainer.devices=0: must be a positive integer, -1"),
    ("trainer.num_sanity_val_steps=-3", "trainer.num_sanity_val_steps=-3: must be an integer"),
    ("seed=-1", "seed=-1: must be an integer from 0 to 4294967295 or null"),
    ("seed=abc", "seed=abc: must be an integer from 0 to 4294967295 or null"),
    ("scheduler.warmup_ratio=2", r"scheduler.warmup_ratio=2: must be a number in \[0, 1\]"),
    ("+model.lr_mult.encoder=-1", "model.lr_mult.encoder=-1: must be a number >= 0"),
    ("data.std=[0.25,0,0.25]", r"data.std=\[0.25, 0, 0.25\]: must be a list of numbers > 0"),
    ("data.on_bad_sample=ignore", "data.on_bad_sample=ignore: must be error or skip"),
    ("model.nonfinite_loss=warn", "model.nonfinite_loss=warn: must be error or skip"),
    (
        "data.dataset.num_samples={train: 0, val: 5, test: 5}",
        r"data.dataset.num_samples=\{train: 0, val: 5, test: 5\}: must be a positive integer, "
        "or one per split",
    ),
    ("callbacks.visualizer.every_n_epochs=0", "callbacks.visualizer.every_n_epochs=0"),
    ("callbacks.model_checkpoint.save_top_k=-2", "callbacks.model_checkpoint.save_top_k=-2"),
]

# (script config, its required values, the bad override, the message's start)
BAD_SCRIPTS = [
    (
        "predict",
        ["ckpt_path=x.ckpt", "input=in"],
        "score_thresh=2",
        r"score_thresh=2: must be "
        r"a number in \[0, 1\] or null",
    ),
    ("predict", ["ckpt_path=x.ckpt", "input=in"], "alpha=1.5", r"alpha=1.5: must be a number"),
    ("predict", ["ckpt_path=x.ckpt", "input=in"], "batch_size=0", f"batch_size=0: {POSITIVE}"),
    ("predict", ["ckpt_path=x.ckpt", "input=in"], "precision=fp8", "precision=fp8: must be one"),
    ("eval", ["ckpt_path=x.ckpt"], "inference.overlap=1", "inference.overlap=1: must be a num"),
    ("eval", ["ckpt_path=x.ckpt"], "+data.batch_size=0", f"data.batch_size=0: {POSITIVE}"),
    ("export", ["ckpt_path=x.ckpt"], "opset=0", f"opset=0: {POSITIVE}"),
    ("export", ["ckpt_path=x.ckpt"], "sample_size=[2,64]", r"sample_size=\[2, 64\]: must be \["),
    ("export", ["ckpt_path=x.ckpt"], "tolerance=-1", "tolerance=-1: must be a number >= 0"),
    ("browse", [], "num=0", f"num=0: {POSITIVE} or null"),
    ("browse", [], "cols=0", f"cols=0: {POSITIVE}"),
    ("benchmark", [], "bench.steps=0", f"bench.steps=0: {POSITIVE}"),
    ("check_data", [], "check.max_listed=-1", "check.max_listed=-1: must be an integer >= 0"),
    ("data_stats", [], "stats.batch_size=0", f"stats.batch_size=0: {POSITIVE}"),
    ("memcheck", [], "memcheck.steps=0", f"memcheck.steps=0: {POSITIVE}"),
    ("reproduce", [], "budget=0", "budget=0: must be a number > 0"),
]

# The top-level configs with their ??? values filled; those composing train.yaml also pass
# check_config (the others have no model to check against the data).
SCRIPTS = {
    "train": [],
    "eval": ["ckpt_path=x.ckpt"],
    "predict": ["ckpt_path=x.ckpt", "input=in"],
    "export": ["ckpt_path=x.ckpt"],
    "benchmark": [],
    "browse": [],
    "check_data": [],
    "data_stats": [],
    "memcheck": [],
    "reproduce": [],
}
WITH_TRAIN = {"train", "benchmark", "browse", "data_stats", "memcheck"}

GROUPS = [
    "data", "model", "loss", "optimizer", "scheduler", "trainer", "callbacks", "logger",
    "debug", "experiment", "hparams_search", "task", "inference",
]  # fmt: skip


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


@pytest.mark.parametrize("override,message", BAD_TRAIN, ids=[o for o, _ in BAD_TRAIN])
def test_a_bad_training_value_names_its_key_and_the_allowed_values(tmp_path, override, message):
    cfg = compose_cfg("train", [override], tmp_path)
    with pytest.raises(InputError) as err:
        check_config(cfg)
    assert re.match(message, str(err.value)), str(err.value)
    assert "\n" not in str(err.value)  # one bad value: one line


@pytest.mark.parametrize(
    "name,required,override,message",
    BAD_SCRIPTS,
    ids=[f"{n}-{o}" for n, _, o, _ in BAD_SCRIPTS],
)
def test_a_bad_value_of_another_script_names_its_key(tmp_path, name, required, override, message):
    cfg = compose_cfg(name, [*required, override], tmp_path)
    with pytest.raises(InputError) as err:
        check_values(cfg)
    assert re.match(message, str(err.value)), str(err.value)


def test_training_stops_before_anything_is_built(tmp_path, monkeypatch):
    def built(*args, **kwargs):
        raise AssertionError("something was built before the config was checked")

    for name in ("build", "build_module", "instantiate", "print_config_tree", "load_checkpoint"):
        monkeypatch.setattr(pipeline, name, built)
    monkeypatch.setattr(pipeline.provenance, "save", built)
    cfg = compose_cfg("train", ["data.batch_size=abc"], tmp_path)
    with pytest.raises(InputError, match=r"^data.batch_size=abc: must be a positive integer"):
        pipeline.train(cfg)


def test_every_bad_value_is_in_one_message(tmp_path):
    overrides = [
        "data.batch_size=abc",
        "optimizer.lr=-1",
        "trainer.max_epochs=-5",
        "inference.overlap=1.5",
        "+trainer.limit_train_batches=1.5",
    ]
    cfg = compose_cfg("train", overrides, tmp_path)
    with pytest.raises(InputError) as err:
        check_config(cfg)
    lines = str(err.value).splitlines()
    assert lines[0] == "5 config values are not valid:"
    for override in overrides:
        key, value = override.lstrip("+").split("=")
        assert sum(line.strip().startswith(f"{key}={value}: must be ") for line in lines) == 1


def test_null_is_allowed_where_the_default_is_null(tmp_path):
    nulls = ["seed=null", "data.val_subset=null", "data.class_weights=null", "data.pin_memory=null"]
    check_config(compose_cfg("train", nulls, tmp_path))
    with pytest.raises(InputError, match=f"data.batch_size=null: {POSITIVE}"):
        check_config(compose_cfg("train", ["data.batch_size=null"], tmp_path))


def test_lightning_batch_limits_counts_fractions_and_whole_floats_pass(tmp_path):
    ok = ["+trainer.limit_train_batches=3", "+trainer.limit_val_batches=0.5"]
    ok += ["+trainer.limit_test_batches=2.0", "+trainer.val_check_interval=0.25"]
    check_config(compose_cfg("train", ok, tmp_path))


def test_class_weights_must_match_the_classes(tmp_path):
    cfg = compose_cfg("train", ["data.class_weights=[1.0,2.0]"], tmp_path)
    with pytest.raises(InputError, match=r"data.class_weights has 2 values but data 'shapes' has "):
        check_config(cfg)


def test_each_messages_example_passes_its_rule_as_typed_on_the_command_line():
    parser = OverridesParser.create()
    for key, rule in RULES.items():
        override = parser.parse_override(f"{key.replace('*', 'x')}={rule.example}")
        assert rule.ok(override.value()), (key, rule.example)


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS for o in _options(g)], ids=lambda v: str(v)
)
def test_every_shipped_group_option_passes(tmp_path, group, option):
    task = ["task=instance"] if option.startswith("maskrcnn_") else []
    check_config(compose_cfg("train", [*task, f"{group}={option}"], tmp_path))


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_top_level_config_passes(tmp_path, name):
    cfg = compose_cfg(name, SCRIPTS[name], tmp_path)
    check_values(cfg)
    if name in WITH_TRAIN:
        check_config(cfg)


def test_every_reproduce_run_passes(tmp_path):
    """The training configs src/reproduce.py composes for each run of each finding."""
    rep = compose_cfg("reproduce", [], tmp_path)
    runs = []
    for spec in rep.catalogue.values():
        spec_overrides = [str(o) for o in spec.overrides]
        plan = plan_overrides(budget_plan(spec, float(rep.budget)))
        for run in spec.runs:
            runs.append(
                [
                    *map(str, rep.common_overrides),
                    "data.root=/nowhere",
                    *spec_overrides,
                    *map(str, run.overrides),
                    *plan,
                ]
            )
    assert len(runs) >= 8
    for overrides in runs:
        cfg = compose_cfg("train", overrides, tmp_path)
        assert isinstance(cfg, DictConfig)
        check_config(cfg)
