"""The input files of an inference run: files, folders (searched recursively) and list files.

A run's file list is sorted and free of duplicates, so that it is the same on every process and
every rerun: ranks take disjoint shards of it, and ``--resume`` matches files by their path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import Dataset

from .errors import InferenceConfigError

__all__ = ["SKIPPED_NAMES", "InputFiles"]

SKIPPED_NAMES = frozenset({"DICOMDIR"})
"""File names a folder search leaves out (a DICOMDIR indexes a PACS export; it holds no image)."""


class InputFiles(Dataset):
    """The DICOM files to run on, as a sorted list of absolute paths (a map-style torch ``Dataset``).

    Every regular file inside a folder is an input (DICOM files often have no suffix), except
    hidden files, files inside hidden folders, ``DICOMDIR`` and anything inside ``exclude`` (the
    run's output folder). A file that is not DICOM gets an error line in the run's errors file,
    like any other bad input. Folder symlinks are not followed (no cycles); file symlinks are.

    Args:
        paths: files and folders. A path that does not exist is kept as a file, so that the run
            reports it ("no such file") instead of silently skipping it.
        list_files: text files with one input path per line (files or folders); blank lines and
            lines starting with ``#`` are ignored; relative paths are relative to the list file's
            folder.
        exclude: a folder whose files are never inputs (the runner passes its output folder).

    Raises:
        InferenceConfigError: (when the files are listed) a list file cannot be read.
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike] = (),
        list_files: Sequence[str | os.PathLike] = (),
        exclude: str | os.PathLike | None = None,
    ) -> None:
        self.paths = [Path(paths)] if isinstance(paths, str | os.PathLike) else [Path(p) for p in paths]
        self.list_files = [Path(p) for p in list_files]
        self.exclude = None if exclude is None else Path(exclude).absolute()
        self._files: list[str] | None = None

    def with_exclude(self, exclude: str | os.PathLike) -> InputFiles:
        """A copy that also leaves out everything inside ``exclude``."""
        return InputFiles(self.paths, self.list_files, exclude)

    def files(self) -> list[str]:
        """The sorted, de-duplicated absolute paths (searched once, then cached)."""
        if self._files is None:
            found: set[str] = set()
            for path in [*self.paths, *self._listed_paths()]:
                found.update(self._expand(path))
            self._files = sorted(found)
        return self._files

    def __len__(self) -> int:
        return len(self.files())

    def __getitem__(self, index: int) -> str:
        return self.files()[index]

    def _listed_paths(self) -> list[Path]:
        listed = []
        for list_file in self.list_files:
            try:
                lines = list_file.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as err:
                raise InferenceConfigError(f"Cannot read the list file `{list_file}`: {err}.") from err
            for line in lines:
                entry = line.strip()
                if entry and not entry.startswith("#"):
                    listed.append(list_file.parent / entry)
        return listed

    def _expand(self, path: Path) -> list[str]:
        path = path.absolute()
        if not path.is_dir():
            return [] if self._excluded(path) else [str(path)]
        files = []
        for root, folders, names in os.walk(path):
            folders[:] = [f for f in folders if not f.startswith(".")]
            for name in names:
                file = Path(root) / name
                if name.startswith(".") or name in SKIPPED_NAMES or self._excluded(file) or not file.is_file():
                    continue
                files.append(str(file))
        return files

    def _excluded(self, path: Path) -> bool:
        return self.exclude is not None and path.is_relative_to(self.exclude)
