"""Writes every ```cpp block of a README that is not an excerpt into its own file.

    python3 extract_cpp_blocks.py README.md OUT_DIR

An excerpt is a block whose first line names a file of the repository
(``// path``); tests/python/test_readme.py checks those against their file.
Each other block becomes OUT_DIR/readme_line<N>.cpp (N: the line of its
opening fence); their names are printed, one a line, ``+`` before those with a
``main`` (to be run as well as built).
"""

import re
import sys
from pathlib import Path

readme, out = Path(sys.argv[1]), Path(sys.argv[2])
repo = readme.parent
out.mkdir(parents=True, exist_ok=True)
for old in out.glob("readme_line*.cpp"):
    old.unlink()
lines = readme.read_text().split("\n")
i = 0
while i < len(lines):
    if lines[i].rstrip() != "```cpp":
        i += 1
        continue
    start, body = i + 1, []
    i += 1
    while i < len(lines) and lines[i].rstrip() != "```":
        body.append(lines[i])
        i += 1
    first = body[0].strip() if body else ""
    quoted = re.fullmatch(r"//\s*(\S+)", first)
    if quoted and (repo / quoted.group(1)).is_file():
        continue
    name = f"readme_line{start}.cpp"
    text = "\n".join(body) + "\n"
    target = out / name
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    print(("+" if re.search(r"\bint\s+main\s*\(", text) else "") + name)
