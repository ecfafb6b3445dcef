"""`refinery train --help` shows every option's default, and neither the help nor the start of `refinery` imports
torch."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from refinery.training.cli import DEFAULT_IN_WORDS, FLAGS
from refinery.training.config import TrainConfig


def _options(help_text: str) -> dict[str, str]:
    """Each argument's entry of an argparse help (its first word: --lr, config), its wrapped lines joined."""
    entries: dict[str, str] = {}
    current = None
    for line in help_text.split("\n\n", 2)[2].splitlines():  # after the usage and the description
        if re.match(r"^  \S", line):
            current = line.split()[0].rstrip(",")
            entries[current] = line.strip()
        elif current and line.startswith("    "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


def test_every_option_shows_its_default():
    env = {**os.environ, "COLUMNS": "100"}
    done = subprocess.run([sys.executable, "-m", "refinery.pipelines", "train", "--help"], capture_output=True,
                          text=True, env=env, check=True)
    options = _options(done.stdout)
    assert "--lr" in options and "config" in options
    for name, entry in options.items():
        if name not in ("-h", "--help"):
            assert "(default: " in entry, f"`refinery train --help` shows no default for {name}: {entry}"
    for flag, option, _ in FLAGS:  # the values are TrainConfig's own, or said in words where they are None
        shown = re.search(r"\(default: (.+?)\)$", options[flag]).group(1)
        expected = DEFAULT_IN_WORDS.get(option) or str(TrainConfig.model_fields[option].default)
        assert shown == expected, flag
    assert "(default: 0.0006)" in options["--lr"] and "(default: tiny)" in options["--size"]
    assert "(default: auto)" in options["--device"]


def test_neither_the_cli_nor_the_train_help_imports_torch():
    probe = ("import contextlib, io, sys\n"
             "import refinery.pipelines.commands.cli as cli\n"
             "cli.build_parser()\n"
             "print('torch' in sys.modules, 'pydantic' in sys.modules)\n"  # what every start of `refinery` pays
             "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
             "    cli.main(['train', '--help'])\n"
             "print('torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout == "False False\nFalse\n"
