"""The README's Python snippets run as written (those that need no download: the MNIST training one reads a
dataset from disk or the network)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kdsl.cli import main

ROOT = Path(__file__).resolve().parent.parent
SNIPPETS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
OFFLINE = [s for s in SNIPPETS if "load_data()" not in s]


@pytest.mark.parametrize("snippet", OFFLINE, ids=[f"snippet{i}" for i in range(len(OFFLINE))])
def test_a_readme_snippet_runs(snippet, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(ROOT)
    if "kernels/" in snippet:  # the standalone module, after the command the README gives before it
        command = re.search(r"`kdsl (compile \S+ -o kernels/)`", (ROOT / "README.md").read_text(encoding="utf-8"))
        assert main([*command.group(1).split()[:-1], str(tmp_path / "kernels")]) == 0
        monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {})
