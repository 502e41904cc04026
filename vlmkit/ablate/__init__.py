"""``vlmkit ablate``: the paper's ablations at toy scale, as matched sweeps of ordinary ``vlmkit fit`` runs.

An ablation YAML (``recipes/ablations/``) names a base recipe, the arms (arguments a user could type), the metrics
and the paper's numbers; :mod:`~vlmkit.ablate.runner` runs every arm x seed in its own process and folder,
:mod:`~vlmkit.ablate.report` rebuilds the tables and plots from those folders, :mod:`~vlmkit.ablate.pretrain`
builds the toy pretrained backbones the arms start from, and :class:`RunRecorder` is the callback that writes what
each run measured.
"""

from vlmkit.ablate.recorder import RunRecorder
from vlmkit.ablate.spec import Ablation, SpecError, load_ablation

__all__ = ["Ablation", "RunRecorder", "SpecError", "load_ablation"]
