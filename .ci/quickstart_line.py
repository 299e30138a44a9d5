"""Print line N (1-based) of the first fenced code block under the README's '## Quickstart' heading."""

from __future__ import annotations

import sys
from pathlib import Path


def quickstart_line(readme: Path, number: int) -> str:
    text = readme.read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1]
    block = section.split("```", 2)[1]
    lines = [line for line in block.splitlines()[1:] if line.strip()]
    if len(lines) != 2:
        raise SystemExit(f"{readme}: the Quickstart block must hold exactly two lines, found {len(lines)}")
    return lines[number - 1]


if __name__ == "__main__":
    print(quickstart_line(Path(sys.argv[1]), int(sys.argv[2])))
