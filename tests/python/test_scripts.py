"""The project's shell scripts: syntax, and no pipeline that can fail by racing.

Under `set -o pipefail`, `producer | grep -q pattern` fails whenever grep
exits at its first match before the producer has written everything: the
producer dies of SIGPIPE and the pipeline reports failure although the
pattern was found. scripts/test.sh once lost a whole sanitizer run to this.
"""

import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPTS = sorted([*ROOT.glob("scripts/*.sh"), ROOT / ".ci" / "run"])

# A pipe into a reader that may stop before its input ends.
EARLY_EXIT_READER = re.compile(r"\|\s*(grep\s+(-[A-Za-z]*q|--quiet)|head\b)")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_script_parses(script):
    subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pipeline_into_an_early_exiting_reader(script):
    offenders = [
        f"{script.name}:{n}: {line.strip()}"
        for n, line in enumerate(script.read_text().splitlines(), 1)
        if not line.lstrip().startswith("#") and EARLY_EXIT_READER.search(line)
    ]
    assert not offenders, "pipelines that fail under pipefail when the reader exits early:\n" + "\n".join(offenders)


def test_the_check_catches_the_old_probe():
    assert EARLY_EXIT_READER.search('ninja -C d -t targets all 2>/dev/null | grep -q "^$t:"')
    assert EARLY_EXIT_READER.search("dpkg-query -W x | grep --quiet ok")
    assert not EARLY_EXIT_READER.search("grep -E 'stat' log | awk '{print $2}'")
