"""docs/accuracy.md's commands run with tiny arguments (see tests/test_bundle_readme_commands.py).

A file of its own: it is the longest document test (about 3 minutes), and ``pytest -n 2 --dist loadfile``
schedules whole files, so here it can run beside the other documents' commands instead of after them.
"""

from __future__ import annotations

from pathlib import Path

from test_bundle_readme_commands import ACCURACY_DOC
from test_bundle_readme_commands import test_long_doc_commands_run_with_tiny_arguments as run_long_doc


def test_accuracy_doc_commands_run_with_tiny_arguments(tmp_path: Path) -> None:
    run_long_doc(ACCURACY_DOC, tmp_path)
