"""The run directory: `runs/<name>/<stage>-<fingerprint>/` with a manifest, a claim (one run
writes a run directory at a time) and atomic completion.

A stage works in `<stage>-<fp>.partial/`; only when it returns does the engine write its
`manifest.json` and rename the folder, so a crash never leaves a half stage that looks
finished, and a re-run finds the partial folder (and any checkpoints in it) to resume.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from ..errors import CloError
from ..files import read_json, write_json_atomic

FP_CHARS = 12
MANIFEST = "manifest.json"
CLAIM = ".claim"  # holds the pid of the run writing the directory


class RunStore:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self._claim_handle = None

    def stage_dir(self, stage_id: str, fingerprint: str) -> Path:
        return self.run_dir / f"{stage_id}-{fingerprint[:FP_CHARS]}"

    def partial_dir(self, stage_id: str, fingerprint: str) -> Path:
        return self.run_dir / f"{stage_id}-{fingerprint[:FP_CHARS]}.partial"

    def is_done(self, stage_id: str, fingerprint: str) -> bool:
        return (self.stage_dir(stage_id, fingerprint) / MANIFEST).exists()

    def manifest(self, stage_id: str, fingerprint: str) -> dict:
        return read_json(self.stage_dir(stage_id, fingerprint) / MANIFEST)

    def begin(self, stage_id: str, fingerprint: str) -> tuple[Path, bool]:
        """The work folder for a stage and whether it already existed (a resume)."""
        partial = self.partial_dir(stage_id, fingerprint)
        resumed = partial.exists()
        partial.mkdir(parents=True, exist_ok=True)
        return partial, resumed

    def finish(self, stage_id: str, fingerprint: str, manifest: dict) -> Path:
        partial = self.partial_dir(stage_id, fingerprint)
        final = self.stage_dir(stage_id, fingerprint)
        write_json_atomic(partial / MANIFEST, manifest)
        if final.exists():  # an earlier, manifest-less leftover: never finished, safe to replace
            shutil.rmtree(final)
        os.replace(partial, final)
        return final

    # ------------------------------------------------------------------ claim
    # (not called a lock: a lock file is a pinned recipe, `share/lock.py`)
    def claim(self) -> None:
        """Stop two runs from writing the same run directory (released when the process ends)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.run_dir / CLAIM, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise CloError(
                f"run directory {self.run_dir} is in use by {holder}",
                hint="wait for that run to finish, or give this one another `name`",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._claim_handle = handle

    def release(self) -> None:
        if self._claim_handle is not None:
            fcntl.flock(self._claim_handle, fcntl.LOCK_UN)
            self._claim_handle.close()
            self._claim_handle = None
