"""Every command the README shows runs as written (Snakemake ones as a dry run).

The commands are extracted from README.md's fenced ``bash``/``sh`` blocks (backslash continuations
joined, comments dropped) and from inline code spans that start with a command. Snakemake commands
run with ``-n`` appended in a scratch copy of the repository; ``make`` targets with ``make -n``;
``python -m``/``torchrun -m`` modules with ``--help``. A documented command can therefore never be
broken silently again (e.g. ``--configfile`` swallowing a target written after it).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: Commands a reader types to set up a machine; nothing to check beyond what `make test` does.
SETUP_PREFIXES = ("python3.11 -m venv", "pip ", ".venv/bin/pip", "git ", "cd ", "apt-get", "export ",
                  "source ", "sbatch", "srun", "bash ", "chromium")
COMMAND_RE = re.compile(r"^(\.venv/bin/)?(snakemake|make|python|torchrun)\b")


#: Fence languages whose lines are shell commands (blocks in other languages, e.g. yaml, are skipped).
SHELL_FENCES = ("", "bash", "sh", "shell", "console")


def _fenced_blocks(text: str) -> list[str]:
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)
    return [body for lang, body in blocks if lang in SHELL_FENCES]


def _logical_lines(block: str) -> list[str]:
    lines, current = [], ""
    for raw in block.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        lines.append(" ".join(current.split()))
        current = ""
    return [ln for ln in lines if ln]


def _strip_comment(line: str) -> str:
    if line.startswith("#"):
        return ""
    return re.split(r"\s+#\s", line, maxsplit=1)[0].strip()


def readme_commands(text: str) -> list[str]:
    """The shell commands shown in a README (fenced blocks and command-like inline code spans)."""
    commands: list[str] = []
    for block in _fenced_blocks(text):
        for line in _logical_lines(block):
            cmd = _strip_comment(line)
            if cmd and not cmd.startswith(SETUP_PREFIXES):
                commands.append(cmd)
    without_blocks = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    for span in re.findall(r"`([^`\n]+)`", without_blocks):
        span = span.strip()
        if COMMAND_RE.match(span) and " " in span:
            commands.append(span)
    return list(dict.fromkeys(commands))


def test_extraction_joins_continuations_and_drops_comments() -> None:
    text = ("x\n```bash\nmake run   # sets up\n# a comment\n.venv/bin/snakemake --cores all \\\n"
            "  results/t.csv\npip install x\n```\nsee `make test` and `make` and `snakemake -n t`.\n")
    assert readme_commands(text) == ["make run", ".venv/bin/snakemake --cores all results/t.csv",
                                     "make test", "snakemake -n t"]


def test_extraction_skips_blocks_of_other_languages() -> None:
    text = "```yaml\nrun: x\n```\n\n```bash\nmake run\n```\n```python\nimport torch\n```\n"
    assert readme_commands(text) == ["make run"]


COMMANDS = readme_commands(README.read_text())


def test_readme_shows_the_commands_it_should() -> None:
    assert "make run" in COMMANDS and "make test" in COMMANDS
    assert any("config/pvoc.yaml" in c and "snakemake" in c for c in COMMANDS)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository without outputs, where dry runs may create .snakemake/."""
    dest = tmp_path_factory.mktemp("readme") / "repo"
    shutil.copytree(ROOT, dest, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "results", "resources", ".snakemake", "__pycache__", ".pytest_cache", "*.egg-info"))
    return dest


def _run(args: list[str] | str, cwd: Path, shell: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, shell=shell, timeout=300,
                          executable="/bin/bash" if shell else None)


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(command: str, scratch: Path) -> None:
    words = shlex.split(command)
    exe = words[0].removeprefix(".venv/bin/")
    if exe == "snakemake":
        # through bash so that brace expansion ({0.5,1,2}) works as in the reader's shell
        rest = command.split(None, 1)[1] if len(words) > 1 else ""
        proc = _run(f"{shlex.quote(sys.executable)} -m snakemake {rest} -n", scratch, shell=True)
    elif exe == "make":
        proc = _run(["make", "-n", *words[1:]], scratch)
    elif exe in ("python", "python3", "python3.11", "torchrun"):
        assert "-m" in words, f"README command runs a script, not a module: {command}"
        module = words[words.index("-m") + 1]
        proc = _run([sys.executable, "-m", module, "--help"], scratch)
    else:
        pytest.fail(f"README command of an unknown kind (add it to the test): {command}")
    assert proc.returncode == 0, (f"README command fails: {command}\n{proc.stdout[-2000:]}\n"
                                  f"{proc.stderr[-2000:]}")
