"""File helpers shared by every layer: atomic writes and safe checkpoint loading."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import torch

from edgeseg.errors import EdgesegError, reraise_interrupt


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    A crash never leaves a half-written file. mkstemp creates 0600 files; the result gets the permissions a plain
    ``open()`` would give (0666 minus the umask), so artifacts and weights stay readable by others. A path that is a
    folder, an unwritable folder or a full disk is one EdgesegError line naming ``path`` (the temporary file is
    removed first).
    """
    path = writable_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise EdgesegError(describe_os_error(exc, path)) from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise EdgesegError(describe_os_error(exc, path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _free_bytes(path: Path) -> int | None:
    """Free bytes on the filesystem holding ``path`` (its nearest existing parent); None when unknown."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def describe_os_error(exc: OSError, path: Path | None = None) -> str:
    """An OSError met while reading or writing ``path`` (default: the error's own file name) as one line naming the
    path, the problem and the fix."""
    where = path if path is not None else (exc.filename or "a file")
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        free = _free_bytes(Path(where))
        left = "" if free is None else f" ({_mb(free)} free there)"
        return f"no space left on the device writing {where}{left}: free some space or write elsewhere"
    if code == errno.EROFS:
        return f"cannot write {where}: the filesystem is read-only; write elsewhere"
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied: {where}: check its permissions, or write elsewhere"
    if code == errno.EISDIR:
        return f"{where} is a folder: pass a file path"
    if code == errno.ENOTDIR:
        return f"{where}: a part of the path is a file, not a folder: pass a path under a folder"
    if code == errno.EEXIST:
        return f"{where} already exists (and is not what edgeseg expected there): remove it or pass another path"
    if code == errno.ENOENT:
        return f"{where} not found: pass an existing path"
    return f"{where}: {exc.strerror or exc} (errno {code})"


def require_free_space(folder: Path, needed: int, what: str) -> None:
    """Refuse to start writing ``what`` into ``folder`` when its filesystem has less than ``needed`` bytes free:
    some writers (TFLite's LLVM-based serializer) abort the process on a full disk instead of raising."""
    free = _free_bytes(folder)
    if free is not None and free < needed:
        raise EdgesegError(
            f"not enough space for {what} in {folder}: about {_mb(needed)} needed, {_mb(free)} free: free some "
            "space or pass another --out"
        )


def writable_file(path: Path, option: str | None = None) -> Path:
    """A file path a command will write: not a folder, and not under a file (checked before any work is done, so
    the error comes first, not after an evaluation). ``option`` names the command-line option in the message."""
    path = Path(path)
    name = f"{option} {path}" if option else str(path)
    if path.is_dir():
        raise EdgesegError(f"{name} is a folder: pass a file path to write to")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise EdgesegError(f"{name}: {parent} is a file, not a folder: pass a path under a folder")
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    _atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    _atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path: Path) -> dict:
    """``torch.load(weights_only=True)`` with one-line errors for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise EdgesegError(f"weights file not found: {path} (pass an existing .pt file, or --weights camvid)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/corrupt/pickled-code files
        reraise_interrupt(exc)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgesegError(f"cannot load weights {path}: not a valid PyTorch checkpoint ({first[:160]})") from None
    if not isinstance(obj, dict):
        raise EdgesegError(f"{path} holds a {type(obj).__name__}, not a state dict or a checkpoint dict")
    return obj


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def validation_problems(exc, field_prefix: str = "") -> str:
    """A pydantic ValidationError as one line: ``field 'a.b': message; ...``."""
    return "; ".join(
        f"field '{field_prefix}{'.'.join(str(p) for p in e['loc']) or '(top level)'}': "
        f"{e['msg'].removeprefix('Value error, ')}"
        for e in exc.errors()
    )


# A user file nested deeper than this is refused before the parser's recursion can run out of stack.
YAML_MAX_DEPTH = 64


class _RefusedYaml(Exception):
    """YAML that parses but that edgeseg refuses (a key given twice, nesting too deep); the text names the line."""


def _yaml_loader():
    """yaml.SafeLoader (no python tags) that refuses a key given twice in one mapping (PyYAML keeps the last one
    silently) and mappings/lists nested deeper than ``YAML_MAX_DEPTH``."""
    import yaml

    class StrictSafeLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            self._depth = getattr(self, "_depth", 0) + 1
            try:
                if self._depth > YAML_MAX_DEPTH:
                    mark = self.peek_event().start_mark
                    raise _RefusedYaml(f"line {mark.line + 1}: nested deeper than {YAML_MAX_DEPTH} levels")
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                first_line: dict = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                    try:
                        if key in first_line:
                            raise _RefusedYaml(
                                f"line {line}: key {key!r} is given twice (first on line {first_line[key]}); keep one"
                            )
                        first_line[key] = line
                    except TypeError:  # an unhashable key: SafeLoader's own error follows
                        continue
            return super().construct_mapping(node, deep)

    return StrictSafeLoader


def load_yaml_mapping(path: Path, what: str, expected: str, missing_hint: str | None = None) -> dict:
    """Read a YAML file that must hold a mapping (the fields of ``what``, e.g. "device profile"); every problem is
    one EdgesegError line naming ``what``, the file, and the line: invalid YAML, a key given twice, a file that is
    not UTF-8, nesting deeper than ``YAML_MAX_DEPTH``. The one YAML reader for user files: validate the result
    with ``load_yaml_schema``, or keep it raw to write an edited copy."""
    import yaml

    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
        data = yaml.load(text, Loader=_yaml_loader())  # noqa: S506  a SafeLoader subclass
    except FileNotFoundError:
        hint = f" ({missing_hint})" if missing_hint else ""
        raise EdgesegError(f"{what} {path} not found{hint}") from None
    except UnicodeDecodeError as exc:
        raise EdgesegError(
            f"{what} {path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None
    except _RefusedYaml as exc:
        raise EdgesegError(f"{what} {path}: {exc}") from None
    except RecursionError:
        raise EdgesegError(f"{what} {path}: nested too deeply to read (at most {YAML_MAX_DEPTH} levels)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise EdgesegError(f"{what} {path}:{where} is not valid YAML ({problem})") from None
    except OSError as exc:
        raise EdgesegError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise EdgesegError(f"{what} {path}: expected a mapping of fields ({expected})")
    return data


def load_yaml_schema(path: Path, schema, what: str, expected: str, missing_hint: str | None = None):
    """Read a YAML file (``load_yaml_mapping``) and validate it against a pydantic model; every problem is one
    EdgesegError line naming ``what`` (e.g. "device profile"), the file, and the line or field."""
    from pydantic import ValidationError

    data = load_yaml_mapping(path, what, expected, missing_hint)
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise EdgesegError(f"{what} {path}: {validation_problems(exc)}") from None


def relative_to_file(value: str | None, file: Path) -> Path | None:
    """A path written in a config file (a check config, a sweep matrix): ``~`` expanded, and relative to the file's
    folder unless absolute; None stays None."""
    if value is None:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else (Path(file).resolve().parent / p).resolve()


def output_folder(path: Path, option: str) -> Path:
    """A folder a command writes into: it may not exist yet, but must not be a file (one-line error naming the
    option, before anything is exported)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EdgesegError(f"{option} {path} is a file, not a folder: pass a folder (it is created if missing)")
    return path
