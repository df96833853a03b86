"""A sweep's folder: the job cache, artifact archives with their hashes, and the sweep's own state file.

Layout of ``--out DIR``::

    sweep.json              the matrix, each job's state (done / failed with its reason / cached), where it ran
    cache/artifact/KEY.json an artifact job's result: its manifest and mIoU (the artifact lives in artifacts/)
    cache/bench/KEY.json    a bench job's result: the bench.json row
    artifacts/<folder>/     the exported artifacts (model file + manifest.json)
    <device>/               bench.json, bench.md, report.html for that device (the same files as `edgeseg bench`)
    report.html, sweep.md   every device's table and Pareto plot on one page

Only jobs that finished (passed, or exported and failed a check) enter the cache; a job that failed (crash,
unreachable device, dead worker) is recorded in sweep.json and redone by the next run.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

from edgeseg.errors import EdgesegError
from edgeseg.io import atomic_write_bytes

STATE = "sweep.json"


def _write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


class SweepStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.artifacts = self.root / "artifacts"
        self.refused: dict[str, str] = {}  # cache key -> why its entry was not served

    # ------------------------------------------------------------------ state
    def read_state(self) -> dict | None:
        path = self.root / STATE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError:
            raise EdgesegError(f"{path} is corrupt (not JSON): delete it or pass another --out") from None

    def write_state(self, state: dict) -> None:
        _write_json(self.root / STATE, state)

    def check_can_start(self, digest: str, resume: bool) -> None:
        """Refuse to start over an unfinished sweep unless ``--resume`` says to continue it."""
        if self.root.exists() and not self.root.is_dir():
            raise EdgesegError(
                f"--out {self.root} is a file, not a folder: pass a folder for the sweep's cache and reports"
            )
        state = self.read_state()
        if state is None:
            if resume:
                raise EdgesegError(f"--resume: {self.root} holds no sweep to continue (run without --resume)")
            return
        unfinished = state.get("status") == "running"
        if resume and state.get("matrix_digest") != digest:
            raise EdgesegError(
                f"--resume: the sweep in {self.root} was started from another matrix; run without --resume "
                "(finished jobs still come from the cache) or pass another --out"
            )
        if unfinished and not resume:
            raise EdgesegError(
                f"{self.root} holds an unfinished sweep (started {state.get('started')}): pass --resume to "
                "continue it, or another --out"
            )

    # ------------------------------------------------------------------ cache
    def _cache_path(self, kind: str, key: str) -> Path:
        return self.root / "cache" / kind / f"{key}.json"

    def cached_artifact(self, key: str) -> dict | None:
        """A cached artifact job whose artifact folder is intact: inside ``artifacts/``, its manifest verified
        (``read_manifest``: schema, model file inside the folder, sha256) and the same as the entry's. Anything
        else is a miss (the job is redone and the entry rewritten), its reason kept in ``refused``. The entry's
        mIoU is a claim: the sweep re-measures it before it is judged."""
        from edgeseg.artifact import inside, read_manifest

        path = self._cache_path("artifact", key)
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text())
            if not isinstance(entry, dict) or not isinstance(entry.get("manifest"), dict):
                raise EdgesegError(f"sweep cache {path}: not an artifact entry")
            folder = inside(self.artifacts, entry.get("folder"), f"sweep cache {path}: field 'folder'", "redone")
            _, manifest = read_manifest(folder)
            # a parity the sweep re-measured (``rechecked``) differs from the folder's claim on purpose; it is
            # re-checked again on every hit
            rechecked = (entry["manifest"].get("parity") or {}).get("rechecked")
            drop = ("cached", "folder", "parity") if rechecked else ("cached", "folder")
            if {k: v for k, v in entry["manifest"].items() if k not in drop} != {
                k: v for k, v in manifest.items() if k not in drop
            }:
                raise EdgesegError(f"sweep cache {path}: its manifest is not the one in {folder}")
        except (OSError, ValueError) as exc:
            self.refused[key] = f"sweep cache {path}: {exc}"
            return None
        except EdgesegError as exc:
            self.refused[key] = str(exc)
            return None
        return {**entry, "folder": str(folder.relative_to(self.artifacts.resolve()))}

    def put_artifact(self, key: str, entry: dict) -> None:
        _write_json(self._cache_path("artifact", key), entry)

    def cached_bench(self, key: str) -> dict | None:
        path = self._cache_path("bench", key)
        try:
            return json.loads(path.read_text()) if path.is_file() else None
        except (OSError, ValueError):
            return None

    def put_bench(self, key: str, entry: dict) -> None:
        _write_json(self._cache_path("bench", key), entry)

    # ------------------------------------------------------------------ artifacts in transit
    def receive(self, archive: bytes, archive_sha256: str, manifest: dict) -> Path:
        """Unpack an artifact sent by a worker into ``artifacts/``, after checking the archive's hash and, once
        unpacked, the model file's hash against its manifest. Returns the artifact folder."""
        return unpack_artifact(archive, archive_sha256, manifest, self.artifacts)


def artifact_digest(model_file: Path) -> str:
    """The manifest's sha256 of a model file (a .mlpackage folder is hashed file by file)."""
    from edgeseg.artifact import artifact_sha256

    return artifact_sha256(Path(model_file))


def pack_artifact(folder: Path) -> tuple[bytes, str]:
    """An artifact folder as an uncompressed tar (model files barely compress) and the archive's sha256."""
    folder = Path(folder)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(folder, arcname=folder.name)
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def unpack_artifact(archive: bytes, archive_sha256: str, manifest: dict, into: Path) -> Path:
    """The inverse of ``pack_artifact``: verify, unpack beside ``into/<folder>`` and rename into place."""
    got = hashlib.sha256(archive).hexdigest()
    if got != archive_sha256:
        raise EdgesegError(f"artifact archive corrupted in transit: sha256 {got[:12]} != sent {archive_sha256[:12]}")
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".incoming.", dir=into))
    try:
        try:
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
                tar.extractall(tmp, filter="data")  # "data": no absolute paths, links out of the folder or devices
        except (tarfile.TarError, OSError) as exc:  # FilterError (.., absolute, links out) is a TarError
            raise EdgesegError(f"artifact archive refused: {type(exc).__name__}: {exc}") from None
        top = list(tmp.iterdir())
        if len(top) != 1 or not top[0].is_dir() or top[0].is_symlink():
            raise EdgesegError(
                f"artifact archive refused: it holds {len(top)} top-level entries, not one artifact folder"
            )
        name = top[0].name
        unpacked = tmp / name
        from edgeseg.artifact import inside

        if not isinstance(manifest, dict) or "file" not in manifest or "sha256" not in manifest:
            raise EdgesegError("artifact archive refused: its manifest names no file and sha256")
        model_file = inside(unpacked, manifest["file"], f"artifact {name}: manifest field 'file'", "refused")
        if not model_file.exists():
            raise EdgesegError(f"artifact {name}: the archive holds no {manifest['file']}")
        digest = artifact_digest(model_file)
        if digest != manifest["sha256"]:
            raise EdgesegError(
                f"artifact {name}: model file sha256 {digest[:12]} does not match its manifest's "
                f"{manifest['sha256'][:12]}"
            )
        final = into / name
        if final.exists():
            shutil.rmtree(final)
        unpacked.rename(final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
