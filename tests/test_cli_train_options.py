"""`qr-lora train` takes the node's settings object: one option per RunSettings field, same names and defaults."""

import dataclasses

import pytest

from qr_core.cli import NOT_ON_THE_COMMAND_LINE, build_parser
from qr_core.training.run_settings import RunSettings


def test_every_setting_is_an_option_with_the_node_default():
    args = vars(build_parser().parse_args(["train", "--dataset", "d"]))
    for field in dataclasses.fields(RunSettings):
        if field.name in NOT_ON_THE_COMMAND_LINE:
            assert field.name not in args
        else:
            assert args[field.name] == field.default, field.name
    assert RunSettings.pick(args) == RunSettings()


def test_options_become_the_same_settings_object():
    args = build_parser().parse_args(["train", "--dataset", "d", "--optimizer", "Adam", "--mode", "qr",
                                      "--no-save-training-state", "--triangular", "--learning-rate", "3e-4",
                                      "--lr-schedule", "cosine", "--batch-size", "2"])
    assert RunSettings.pick(vars(args)) == RunSettings(optimizer="Adam", mode="qr", save_training_state=False,
                                                       triangular=True, learning_rate=3e-4, lr_schedule="cosine",
                                                       batch_size=2)
    with pytest.raises(SystemExit):  # a choice the node does not offer
        build_parser().parse_args(["train", "--dataset", "d", "--training-dtype", "fp16"])
