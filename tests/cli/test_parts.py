"""The parts ``vlmkit list`` and the slot help name: every exported part of each kind, nothing else."""

import inspect

from jsonargparse import ArgumentParser
from jsonargparse._typehints import ActionTypeHint

import vlmkit.connectors
import vlmkit.fusion
import vlmkit.vision
from vlmkit.cli.parts import KINDS, arguments, kind_of_slot, parts, public_path, summary
from vlmkit.cli.slot_help import install_slot_help


def _kind(title):
    return next(kind for kind in KINDS if kind.title == title)


def test_every_exported_connector_and_no_helper_is_a_connector():
    found = {public_path(cls) for cls in parts(_kind("connectors"))}
    exported = {
        f"vlmkit.connectors.{n}" for n in vlmkit.connectors.__all__ if inspect.isclass(getattr(vlmkit.connectors, n))
    }
    assert found == exported
    fusions = {cls.__name__ for cls in parts(_kind("fusions"))}
    assert fusions == {"CrossAttentionFusion", "FullyAutoregressiveFusion"}  # not GatedCrossAttentionBlock
    assert {cls.__name__ for cls in parts(_kind("vision encoders"))} == set(vlmkit.vision.__all__)
    assert "GatedCrossAttentionBlock" in vlmkit.fusion.__all__


def test_data_modules_sources_and_callbacks():
    assert {cls.__name__ for cls in parts(_kind("data modules"))} >= {"SyntheticVQADataModule", "MixtureDataModule"}
    assert {cls.__name__ for cls in parts(_kind("sources"))} == {"ShardSource", "SyntheticSource"}
    names = {cls.__name__ for cls in parts(_kind("callbacks"))}
    assert {"PartGradNorms", "LossSpikeMarkers", "GenerationSamples", "DivergenceGuard"} <= names


def test_arguments_and_summary():
    from vlmkit.connectors import PerceiverResampler

    args = arguments(PerceiverResampler)
    assert args[:3] == ["in_dim: int", "out_dim: int", "num_latents: int = 64"]
    assert summary(PerceiverResampler).startswith("Perceiver resampler")
    assert kind_of_slot("connector").title == "connectors" and kind_of_slot("optimizer") is None


def test_slot_help_names_vlmkits_parts_not_torch_classes():
    install_slot_help()
    from torch import nn

    parser = ArgumentParser()
    parser.add_argument("--model.vlm.connector", type=nn.Module)
    parser.add_argument("--model.something", type=nn.Module)
    actions = {a.dest: a for a in parser._actions if isinstance(a, ActionTypeHint)}
    text = actions["model.vlm.connector"].extra_help()
    assert "vlmkit.connectors.MLPProjection" in text and "vlmkit.connectors.PixelShuffleConnector" in text
    assert "torch.nn.Linear" not in text
    assert "torch.nn.Linear" in actions["model.something"].extra_help()  # other slots keep jsonargparse's list
    assert "vlmkit.connectors.MLPProjection" in parser.format_help()
