"""Connectors: patch features ``[n, p, in_dim]`` to visual tokens ``[n, v, out_dim]``.

One file per connector; each is a plain ``nn.Module`` built as ``factory(in_dim, out_dim)`` and
satisfying :class:`vlmkit.interfaces.Connector` (pixel shuffle, whose tokens depend on the grid's shape:
:class:`~vlmkit.interfaces.GridConnector`).
"""

from vlmkit.connectors.linear import LinearProjection
from vlmkit.connectors.mapping_network import MappingNetwork
from vlmkit.connectors.mlp import MLPProjection
from vlmkit.connectors.perceiver import PerceiverResampler, idefics2_connector_state_dict
from vlmkit.connectors.pixel_shuffle import PixelShuffleConnector

__all__ = [
    "LinearProjection",
    "MLPProjection",
    "MappingNetwork",
    "PerceiverResampler",
    "PixelShuffleConnector",
    "idefics2_connector_state_dict",
]
