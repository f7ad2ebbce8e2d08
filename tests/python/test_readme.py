"""Every code block of README.md is exercised, so the README cannot drift from the code.

- ```python blocks run, each in a fresh interpreter, against a real broker started
  from the quick start's config (``examples/quickstart/slither.toml``); the
  broker's runtime directory and namespace reach them through the environment
  ``slither.connect()`` reads (``SLITHER_RUNTIME_DIR``, ``SLITHER_NAMESPACE``).
- ```toml blocks parse; the quick start's is the shipped file, byte for byte.
- ```sh blocks: every command they call exists (programs of the build tree answer
  ``--help``).
- ```cmake blocks: every command they call is a CMake command.
- A block whose first line names a file of the repository (``# path`` or
  ``// path``) is an excerpt of it: its lines must appear in that file in
  order, ``...`` comments standing for lines left out. The file itself is
  built and run by the examples' tests.
- ```cpp blocks that are not excerpts are compiled and run against the
  installed package by the ctest ``consumer.readme`` (tests/consumer/readme);
  here they are only counted, so that a block cannot hide in another language.

Blocks added later are picked up by the same rules.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO, Broker, unique_namespace

README = REPO / "README.md"
QUICKSTART_CONFIG = REPO / "examples" / "quickstart" / "slither.toml"
LANGUAGES = {"python", "toml", "sh", "cmake", "cpp"}
SHELL_BUILTINS = {"cd", "export", "kill", "set", "source", "."}


@dataclass
class Block:
    language: str
    line: int  # of the opening fence, 1-based
    text: str

    @property
    def id(self) -> str:
        return f"{self.language}-line{self.line}"

    def excerpt_of(self) -> Path | None:
        """The repository file this block quotes, if its first line names one."""
        first = self.text.split("\n", 1)[0].strip()
        m = re.fullmatch(r"(?:#|//)\s*(\S+)", first)
        if m and (REPO / m.group(1)).is_file():
            return REPO / m.group(1)
        return None


def readme_blocks() -> list[Block]:
    blocks: list[Block] = []
    lines = README.read_text().split("\n")
    i = 0
    while i < len(lines):
        m = re.fullmatch(r"```(\S*)\s*", lines[i])
        if not m:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"README.md:{start + 1}: unclosed code block")
        blocks.append(Block(m.group(1), start + 1, "\n".join(body) + "\n"))
        i += 1
    return blocks


BLOCKS = readme_blocks()


def blocks_of(language: str, excerpts: bool = False) -> list[Block]:
    return [b for b in BLOCKS if b.language == language and (b.excerpt_of() is not None) == excerpts]


def test_every_block_has_a_language_this_test_knows():
    unknown = [f"README.md:{b.line}: ```{b.language}" for b in BLOCKS if b.language not in LANGUAGES]
    assert not unknown, "blocks no test exercises: " + ", ".join(unknown)
    assert len(blocks_of("python")) >= 4 and blocks_of("cpp")


# ---- excerpts ---------------------------------------------------------------------------


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.excerpt_of()], ids=lambda b: b.id)
def test_an_excerpt_matches_the_file_it_quotes(block: Block):
    source = [line.strip() for line in block.excerpt_of().read_text().split("\n")]
    at = 0
    for n, line in enumerate(block.text.split("\n")[1:], start=block.line + 2):
        quoted = line.strip()
        if not quoted or re.fullmatch(r"(#|//) \.\.\.", quoted):
            continue
        try:
            at = source.index(quoted, at) + 1
        except ValueError:
            pytest.fail(f"README.md:{n}: {quoted!r} is not in {block.excerpt_of()} "
                        "(after the lines quoted before it)")


# ---- toml, sh, cmake --------------------------------------------------------------------


@pytest.mark.parametrize("block", blocks_of("toml"), ids=lambda b: b.id)
def test_a_toml_block_parses(block: Block):
    tomllib.loads(block.text)


def test_the_quick_start_config_is_the_shipped_file():
    shipped = QUICKSTART_CONFIG.read_text()
    assert any(b.text == shipped for b in blocks_of("toml")), \
        f"no toml block of README.md is {QUICKSTART_CONFIG.relative_to(REPO)} as shipped"


def shell_commands(text: str) -> list[str]:
    """The program of every command of a shell block (after VAR=value assignments)."""
    programs = []
    for line in text.split("\n"):
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        for command in re.split(r"&&|\|\||[|;&]", line):
            words = [w for w in command.split() if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", w)]
            if words:
                programs.append(words[0])
    return programs


@pytest.mark.parametrize("block", blocks_of("sh"), ids=lambda b: b.id)
def test_the_commands_of_a_shell_block_exist(block: Block):
    for program in shell_commands(block.text):
        if program in SHELL_BUILTINS or program.startswith(("/", "~", "$")):
            continue  # a builtin, or a path the commands themselves make (a new venv)
        if "/" not in program:
            assert shutil.which(program), f"README.md:{block.line}: no program {program!r} on PATH"
            continue
        path = REPO / program
        assert path.is_file() and os.access(path, os.X_OK), \
            f"README.md:{block.line}: {program} is not an executable file of the repository"
        if path.is_relative_to(REPO / "build"):
            done = subprocess.run([str(path), "--help"], capture_output=True, timeout=30)
            assert done.returncode == 0, f"{program} --help: {done.stderr.decode(errors='replace')}"


@pytest.mark.parametrize("block", blocks_of("cmake"), ids=lambda b: b.id)
def test_the_commands_of_a_cmake_block_are_cmake_commands(block: Block):
    cmake = shutil.which("cmake")
    assert cmake, "cmake is not installed"
    text = re.sub(r"#.*", "", block.text)
    # Commands of the modules the block includes (FetchContent_Declare) are documented there.
    modules = ""
    for module in re.findall(r"\binclude\s*\(\s*(\w+)\s*\)", text):
        done = subprocess.run([cmake, "--help-module", module], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"README.md:{block.line}: no CMake module {module}"
        modules += done.stdout
    for command in sorted(set(re.findall(r"^\s*([A-Za-z_]\w*)\s*\(", text, re.M))):
        done = subprocess.run([cmake, "--help-command", command], capture_output=True, timeout=30)
        known = (done.returncode == 0 and done.stdout) or re.search(rf"\b{command}\s*\(", modules)
        assert known, f"README.md:{block.line}: {command}() is no CMake command"


# ---- python, against a real broker ------------------------------------------------------


@pytest.fixture(scope="module")
def quickstart_broker(tmp_path_factory: pytest.TempPathFactory):
    """The quick start's broker, as the README starts it, in a runtime dir of its own."""
    base = tmp_path_factory.mktemp("readme")
    broker = Broker(namespace=unique_namespace("readme"), runtime_dir=base / "run",
                    config=QUICKSTART_CONFIG, log=base / "broker.log")
    # The README has the user point SLITHER_PYTHON at the project's interpreter.
    saved = os.environ.get("SLITHER_PYTHON")
    os.environ["SLITHER_PYTHON"] = sys.executable
    try:
        broker.start()
    finally:
        if saved is None:
            del os.environ["SLITHER_PYTHON"]
        else:
            os.environ["SLITHER_PYTHON"] = saved
    yield broker
    assert broker.stop() == 0, broker.log_tail()


@pytest.mark.parametrize("block", blocks_of("python"), ids=lambda b: b.id)
def test_a_python_block_runs_against_the_quick_start_broker(block: Block, quickstart_broker, tmp_path):
    script = tmp_path / f"readme_line{block.line}.py"
    script.write_text(block.text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLITHER_")}
    env.update(SLITHER_RUNTIME_DIR=str(quickstart_broker.runtime_dir),
               SLITHER_NAMESPACE=quickstart_broker.namespace)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (
        f"README.md:{block.line}: the block exited {done.returncode}\n"
        f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}\n--- broker\n{quickstart_broker.log_tail()}")

