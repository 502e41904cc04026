"""Decoder layers found by structure (the per-family checks are in test_transformers_lm.py)."""

from types import SimpleNamespace

import pytest
from torch import nn

from vlmkit.llm.layers import find_decoder_layers


class Expert(nn.Linear):
    pass


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.experts = nn.ModuleList([Expert(4, 4), Expert(4, 4)])  # as many experts as layers, one level deeper


class OtherBlock(nn.Module):
    pass


class ToyLM(nn.Module):
    _no_split_modules = ["Block"]

    def __init__(self, layers: list[nn.Module], num_hidden_layers: int):
        super().__init__()
        self.config = SimpleNamespace(num_hidden_layers=num_hidden_layers)
        self.heads = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])  # same length, not the decoder layers
        self.backbone = nn.Module()
        self.backbone.blocks = nn.ModuleList(layers)


def test_the_no_split_block_list_wins_over_other_lists_of_the_same_length():
    assert find_decoder_layers(ToyLM([Block(), Block()], num_hidden_layers=2)) == "backbone.blocks"


def test_a_model_without_one_list_of_its_layers_is_refused_naming_what_was_found():
    mixed = ToyLM([Block(), OtherBlock(), Block()], num_hidden_layers=3)  # alternating classes (hybrid models)
    with pytest.raises(
        TypeError, match=r"ToyLM: cannot find its decoder layers.*num_hidden_layers=3.*heads \(2 x Linear\)"
    ):
        find_decoder_layers(mixed)
