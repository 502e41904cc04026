"""``vlmkit --help`` lists every command and, like ``vlmkit data --help``, imports neither torch nor Lightning."""

import subprocess
import sys

import pytest

from vlmkit.cli.main import COMMANDS, LIGHTNING_COMMANDS, SUBCOMMANDS, main, top_level_help

HEAVY = ("torch", "lightning", "transformers")


def _modules_after(argv):
    """The heavy modules imported by ``main(argv)`` in a fresh interpreter, and what it printed."""
    code = (
        "import sys\nfrom vlmkit.cli.main import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    return out.rsplit("HEAVY", 1)[1].strip(), out


@pytest.mark.parametrize("argv", [["--help"], [], ["data", "--help"], ["data", "build", "--help"]])
def test_help_does_not_import_torch(argv):
    heavy, out = _modules_after(argv)
    assert heavy == "[]", out
    assert "usage:" in out


def test_top_level_help_names_every_command(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    assert out.strip() == top_level_help()
    for name in (*SUBCOMMANDS, *LIGHTNING_COMMANDS, "generate", "chat", "eval"):
        assert f"\n  {name} " in out, name
    assert set(SUBCOMMANDS) | set(LIGHTNING_COMMANDS) <= set(COMMANDS)


def test_an_unknown_command_is_one_line_with_the_close_match(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fitt", "--config", "recipes/quickstart.yaml"])
    assert str(exit_info.value).startswith("vlmkit: error: unknown command 'fitt'; did you mean fit?")


def test_budget_is_a_subcommand(capsys):
    main(["budget", "--sizes", "384x384", "--patch-size", "14", "--tokens-per-image", "64"])
    out = capsys.readouterr().out
    assert "| 384x384 | 378x378 | 729 | 64 |" in out
    with pytest.raises(SystemExit):
        main(["budget", "--help"])
    assert capsys.readouterr().out.startswith("usage: vlmkit budget")
