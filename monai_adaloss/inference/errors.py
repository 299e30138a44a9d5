"""Exit codes of ``monai-adaloss infer`` and the error that maps to a usage/config failure."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode", "InferenceConfigError"]


class ExitCode(IntEnum):
    """Process exit codes of ``monai-adaloss infer``.

    - ``OK`` (0): every input file has its records (and its SR / overlays when asked for), except
      files skipped by the ``--modalities`` policy (counted as ``skipped`` in the summary).
    - ``FILES_FAILED`` (1): the run completed, and at least one input file failed (its reason is in
      ``errors.jsonl``); every other file has its records.
    - ``OUTPUTS_FAILED`` (4): the run completed, every file that was not skipped has its records, but
      the SR or overlays of at least one file could not be written (``sr: "error: ..."`` in the
      summary, a line with ``"stage": "sr"`` / ``"overlays"`` in ``errors.jsonl``); ``--resume``
      retries the missing SRs.
    - ``USAGE`` (2): nothing was run: bad arguments or configuration (missing or invalid checkpoint,
      no input files, an output folder that holds a run without ``--resume``, ...).
    - ``ABORTED`` (3): the run stopped on an unexpected error that is not about one input file
      (e.g. the device ran out of memory); the finished files are kept, rerun with ``--resume``.
    - ``INTERRUPTED`` (130): stopped by Ctrl-C (SIGINT); rerun with ``--resume``.
    """

    OK = 0
    FILES_FAILED = 1
    USAGE = 2
    ABORTED = 3
    OUTPUTS_FAILED = 4
    INTERRUPTED = 130


class InferenceConfigError(ValueError):
    """The run cannot start: bad arguments, checkpoint, model info or output folder (exit code 2)."""
