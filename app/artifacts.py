"""Artifacts: the files jobs produce, under JOBTRAIL_ARTIFACT_DIR, one folder per job.

A file is written under a temporary name and renamed into place only when complete,
so a killed worker never leaves a half file that looks finished. The job's
`succeeded` event records name, size, SHA-256 and content type.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from jobtrail.events import Artifact
from jobtrail.keys import JOB_ID_RE

log = logging.getLogger(__name__)

_CHUNK = 1 << 16


class _HashingWriter:
    """A binary file that hashes and counts what is written through it."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._file.write(data)

    def tell(self) -> int:
        return self._file.tell()

    def flush(self) -> None:
        self._file.flush()


class ArtifactStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def job_dir(self, job_id: str) -> Path:
        if not JOB_ID_RE.match(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / job_id

    def path(self, job_id: str, artifact: Artifact) -> Path:
        return self.job_dir(job_id) / artifact.name

    @contextlib.contextmanager
    def writer(self, job_id: str, name: str, content_type: str) -> Iterator[tuple[_HashingWriter, list[Artifact]]]:
        """Write an artifact; on a clean exit it is renamed into place and described.

        Yields (file, out): after the block, `out[0]` is the Artifact. On an error the
        temporary file is removed and nothing is left behind.
        """
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad artifact name {name!r}")
        directory = self.job_dir(job_id)
        directory.mkdir(parents=True, exist_ok=True)
        # A worker killed mid-write leaves its temporary behind; the job's lease makes
        # this the only writer now, so any earlier one is garbage.
        for stale in directory.glob(f".{name}.*.part"):
            stale.unlink(missing_ok=True)
        temp = directory / f".{name}.{uuid.uuid4().hex}.part"
        out: list[Artifact] = []
        try:
            with open(temp, "wb") as raw:
                hashed = _HashingWriter(raw)
                yield hashed, out
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(temp, directory / name)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        out.append(Artifact(name=name, size_bytes=hashed.size, sha256=hashed.sha256.hexdigest(),
                            content_type=content_type))

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def job_ids(self) -> list[str]:
        """Every job id with an artifact folder."""
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir() if p.is_dir() and JOB_ID_RE.match(p.name)]

    def sweep(self, live: set[str], *, grace_s: float = 60.0) -> list[str]:
        """Remove the folders of jobs not in `live` (older than `grace_s`); returns their ids."""
        removed = []
        now = time.time()
        for job_id in self.job_ids():
            directory = self.job_dir(job_id)
            if job_id in live:
                continue
            try:
                if now - directory.stat().st_mtime < grace_s:
                    continue
            except FileNotFoundError:
                continue
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(job_id)
        if removed:
            log.info("removed artifacts of %d expired or deleted jobs", len(removed))
        return removed
