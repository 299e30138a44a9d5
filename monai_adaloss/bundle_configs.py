"""One source for the five bundles' configs: a shared base plus one small overlay per bundle.

The configs every bundle ships (``bundles/<name>/configs/{train,evaluate,inference,multi_gpu_train}.json``
and ``logging.conf``) stay complete and self-contained, so ``python -m monai.bundle run`` uses a bundle
folder as it is. They are *generated*: ``bundles/_source/base/<file>`` holds what all five have in
common (every key whose value is the same in all of them, recursively into objects) and
``bundles/_source/<name>/<file>`` only what that bundle adds or sets differently. A file is the
base deep-merged with the overlay (objects merge key by key, the overlay wins; lists and other values
are replaced whole); ``logging.conf`` is the base file itself. ``tests/test_bundle_configs.py`` checks
that the shipped files equal the generated ones.

Edit the sources, then write the bundle files::

    python -m monai_adaloss.bundle_configs --write

or, after editing shipped files directly (e.g. merging a branch that changed a ``train.json``),
recompute the base and the overlays from them::

    python -m monai_adaloss.bundle_configs --extract

``--check`` (the default) exits 1 naming every shipped file that differs from its sources.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["JSON_FILES", "TEXT_FILES", "deep_merge", "extract_sources", "generate", "mismatches", "split_common"]

JSON_FILES = ("train.json", "evaluate.json", "inference.json", "multi_gpu_train.json")
"""Config files generated from base + overlay."""
TEXT_FILES = ("logging.conf",)
"""Files every bundle ships identically (copied from the base)."""
SOURCE = "_source"
_BASE = "base"


def deep_merge(base: Any, overlay: Any) -> Any:
    """``base`` with ``overlay`` on top: dicts merge key by key (base order, then new keys), all else is replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = {key: copy.deepcopy(value) for key, value in base.items()}
        for key, value in overlay.items():
            merged[key] = deep_merge(merged[key], value) if key in merged else copy.deepcopy(value)
        return merged
    return copy.deepcopy(overlay)


def split_common(configs: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Factor dicts into ``(common, [rest_i])`` so that ``deep_merge(common, rest_i) == configs[i]``.

    A key is common when every config has it with an equal value, or with a dict value in all of them
    (then split recursively, kept when the common part is not empty). Key order follows the first config.
    """
    common: dict[str, Any] = {}
    rests: list[dict[str, Any]] = [{} for _ in configs]
    for key in configs[0]:
        values = [c.get(key, _MISSING) for c in configs]
        if any(v is _MISSING for v in values):
            continue
        if all(v == values[0] for v in values):
            common[key] = copy.deepcopy(values[0])
        elif all(isinstance(v, dict) for v in values):
            sub_common, sub_rests = split_common(values)
            if sub_common:
                common[key] = sub_common
                for rest, sub in zip(rests, sub_rests, strict=True):
                    if sub:
                        rest[key] = sub
    for config, rest in zip(configs, rests, strict=True):
        for key, value in config.items():
            if key not in common:
                rest[key] = copy.deepcopy(value)
    # keep each overlay in its config's key order
    ordered = [{key: rest[key] for key in config if key in rest} for config, rest in zip(configs, rests, strict=True)]
    return common, ordered


class _Missing:
    pass


_MISSING = _Missing()


def _bundles(bundles_dir: Path) -> list[str]:
    return sorted(p.name for p in bundles_dir.iterdir() if (p / "configs" / "metadata.json").is_file())


def _dump(value: Any) -> str:
    return json.dumps(value, indent=4) + "\n"


def extract_sources(bundles_dir: Path) -> dict[Path, str]:
    """The base and overlay files (path -> text) that regenerate every bundle's shipped configs."""
    names = _bundles(bundles_dir)
    source = bundles_dir / SOURCE
    files: dict[Path, str] = {}
    for filename in JSON_FILES:
        configs = [json.loads((bundles_dir / n / "configs" / filename).read_text(encoding="utf-8")) for n in names]
        common, rests = split_common(configs)
        files[source / _BASE / filename] = _dump(common)
        for name, rest in zip(names, rests, strict=True):
            files[source / name / filename] = _dump(rest)
    for filename in TEXT_FILES:
        texts = {(bundles_dir / n / "configs" / filename).read_text(encoding="utf-8") for n in names}
        if len(texts) != 1:
            raise ValueError(f"`{filename}` differs between the bundles; make it one text before extracting.")
        files[source / _BASE / filename] = texts.pop()
    return files


def _order_like(value: Any, reference: Any) -> Any:
    """``value`` with its dict keys in ``reference``'s order where they exist there (new keys last), recursively."""
    if not (isinstance(value, dict) and isinstance(reference, dict)):
        return value
    keys = [k for k in reference if k in value] + [k for k in value if k not in reference]
    return {k: _order_like(value[k], reference.get(k)) for k in keys}


def generate(bundles_dir: Path) -> dict[Path, str]:
    """Every bundle's generated config files (path -> text) from ``bundles/_source``.

    Keys keep the order of the shipped file where it exists, so that regenerating changes only what changed.
    """
    source = bundles_dir / SOURCE
    files: dict[Path, str] = {}
    for name in _bundles(bundles_dir):
        for filename in JSON_FILES:
            base = json.loads((source / _BASE / filename).read_text(encoding="utf-8"))
            overlay = json.loads((source / name / filename).read_text(encoding="utf-8"))
            target = bundles_dir / name / "configs" / filename
            merged = deep_merge(base, overlay)
            if target.is_file():
                merged = _order_like(merged, json.loads(target.read_text(encoding="utf-8")))
            files[target] = _dump(merged)
        for filename in TEXT_FILES:
            files[bundles_dir / name / "configs" / filename] = (source / _BASE / filename).read_text(encoding="utf-8")
    return files


def mismatches(bundles_dir: Path) -> list[str]:
    """Shipped files that differ from what the sources generate (JSON compared as values, text exactly)."""
    found = []
    for path, text in generate(bundles_dir).items():
        shipped = path.read_text(encoding="utf-8") if path.is_file() else None
        if shipped is None:
            found.append(f"{path}: missing")
        elif path.suffix == ".json" and json.loads(shipped) != json.loads(text):
            found.append(f"{path}: differs from bundles/{SOURCE}/base + its overlay")
        elif path.suffix != ".json" and shipped != text:
            found.append(f"{path}: differs from bundles/{SOURCE}/base")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_adaloss.bundle_configs", description=__doc__.split("\n")[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="exit 1 when a shipped file differs (default)")
    action.add_argument("--write", action="store_true", help="write the bundles' configs from the sources")
    action.add_argument("--extract", action="store_true", help="write the sources from the bundles' configs")
    parser.add_argument("--bundles-dir", default=str(Path(__file__).resolve().parent.parent / "bundles"))
    args = parser.parse_args(argv)
    bundles_dir = Path(args.bundles_dir)
    if args.write or args.extract:
        files = generate(bundles_dir) if args.write else extract_sources(bundles_dir)
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        print(f"wrote {len(files)} files")
        return 0
    found = mismatches(bundles_dir)
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
