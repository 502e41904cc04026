"""The command line drops known-harmless third-party messages; the library keeps every warning."""

import logging
import subprocess
import sys
import warnings

from vlmkit.cli.quiet import quiet_third_party


def test_importing_vlmkit_installs_no_filter():
    code = (
        "import warnings, vlmkit.cli, vlmkit.cli.lightning_cli, vlmkit.training\n"
        "from vlmkit.cli.quiet import WARNINGS\n"
        "print(sum(f[1] is not None and f[1].pattern in WARNINGS for f in warnings.filters))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300).stdout
    assert out.strip() == "0"


def test_the_known_messages_are_dropped_and_others_kept(caplog):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", stacklevel=1)
        warnings.warn("'set_vital' is deprecated, please do not call", stacklevel=1)
        warnings.warn("Checkpoint directory runs/x/checkpoints exists and is not empty.", stacklevel=1)
        warnings.warn("something the user must see", stacklevel=1)
    assert [str(w.message) for w in caught] == ["something the user must see"]
    with caplog.at_level(logging.INFO):
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info("💡 Tip: For seamless cloud logging ...")
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info("Seed set to 0")
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
            "Failed to load CPU gemm_4bit_forward from kernels-community: %s.", "No module named 'kernels'"
        )
    assert "Tip" not in caplog.text and "kernels-community" not in caplog.text and "Seed set to 0" in caplog.text
