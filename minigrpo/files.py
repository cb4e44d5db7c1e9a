"""Reading and writing files safely: strict readers with user-facing errors, and all-or-nothing writes.

Every loader in minigrpo raises `InputError` (minigrpo/errors.py) for bad input, with a message
that names the file, the field or tensor, what was found and what was expected. Every writer goes through
`atomic_file` / `atomic_dir`, so an interrupted run never leaves a half-written output.
"""
import contextlib
import errno
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path

from safetensors import safe_open

from minigrpo.errors import InputError


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_json(path, what="JSON file", kind=dict):
    """Load a JSON file holding a `kind` (an object by default), or raise InputError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, kind):
        raise InputError(f"{path}: expected a JSON {json_kind(kind)}, found a {json_kind(type(obj))}")
    return obj


def json_kind(tp):
    """JSON's name of a Python type: 'object' for dict, 'array' for list, ..."""
    return {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(tp, tp.__name__)


def read_utf8(path):
    """The text of a file, or InputError naming the file and the line of the first byte that is not UTF-8."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x}); save the file as UTF-8") from None


def read_model_config(path, supported):
    """(config.json as a dict, its path, its architecture) of a checkpoint directory `path`.

    InputError unless `architectures` names one of `supported` (architecture names).
    """
    cfg_path = Path(path) / "config.json"
    raw = read_json(cfg_path, "config.json (the model's configuration)")
    archs = raw.get("architectures") or []
    arch = next((a for a in archs if a in supported), None)
    if arch is None:
        raise InputError(f"{cfg_path}: architectures {archs} is not supported; expected one of {sorted(supported)}")
    return raw, cfg_path, arch


def open_safetensors(file):
    """`safe_open` a safetensors file on the CPU, or raise InputError naming it."""
    try:
        return safe_open(str(file), framework="pt", device="cpu")
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise InputError(f"{file}: not a readable safetensors file ({e})") from None


def safetensors_names(file):
    """The tensor names stored in one safetensors file."""
    with open_safetensors(file) as f:
        return list(f.keys())


def _some(names):
    names = sorted(names)
    return f"{names[:5]}{' …' if len(names) > 5 else ''} ({len(names)} in all)"


def read_tensors(where, files, expected, extra_ok=(), hint=None):
    """Read each tensor of `expected` (name → shape) strictly; yield (name, tensor), one file at a time.

    The one strict safetensors reader of the policy loader, the encoder / reward-model loader and
    the LoRA adapter loader. `files` maps every stored tensor name to its file (one file, or the
    shards of an index). Every check that needs no tensor data runs before anything is yielded:
    InputError, naming `where` (the checkpoint), for a missing tensor or an unexpected one (names
    starting with one of `extra_ok` may be present); then, per tensor, a wrong shape (read from
    the header, before the data) or unreadable data names the file. `hint` is a dict of extra
    sentences for "missing", "unexpected" and "shape" (a function of the tensor name).
    Tensors come grouped by file, so a caller can place each before the next is read.
    """
    hint = hint or {}
    missing = set(expected) - set(files)
    if missing:
        raise InputError(f"{where}: missing tensors {_some(missing)}{hint.get('missing', '')}")
    extra = {n for n in set(files) - set(expected) if not n.startswith(tuple(extra_ok))}
    if extra:
        raise InputError(f"{where}: unexpected tensors {_some(extra)}{hint.get('unexpected', '')}")
    by_file = {}
    for name in expected:
        by_file.setdefault(files[name], []).append(name)
    for file, names in by_file.items():
        with open_safetensors(file) as f:
            for name in names:
                found, want = tuple(f.get_slice(name).get_shape()), tuple(expected[name])
                if found != want:
                    more = hint["shape"](name) if "shape" in hint else ""
                    raise InputError(f"{file}: tensor '{name}' has shape {found}, expected {want}{more}")
                try:
                    t = f.get_tensor(name)
                except Exception as e:
                    raise InputError(f"{file}: tensor '{name}' could not be read ({e}); is the file truncated?") from None
                yield name, t


def check_out(path, flag="--out", kind="directory"):
    """InputError now, before any work, if `path` cannot be written as a `kind` ("directory" or "file").

    Refuses a directory where a file is wanted and the reverse, and a path whose nearest existing
    folder is not writable (or is a file), so a stage never trains for an hour and then fails to save.
    """
    path = Path(path)
    if path.exists() and path.is_dir() != (kind == "directory"):
        found = "a directory" if path.is_dir() else "a file"
        raise InputError(f"{flag} {path}: is {found}, expected a {kind} (or a path that does not exist yet)")
    for p in path.parents:
        if p.exists():
            if not p.is_dir():
                raise InputError(f"{flag} {path}: {p} is a file, so {path} cannot be created")
            if not os.access(p, os.W_OK | os.X_OK):
                raise InputError(f"{flag} {path}: the folder {p} is not writable")
            break
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {path}: the folder is not writable")


def disk_full(e, path):
    """If exception `e` while writing `path` is a full disk, an OSError(ENOSPC) naming `path`; else None.

    Writers that are not Python's (torch.save, safetensors, tokenizers) raise their own errors, so a
    failed write on a disk with under 1 MiB free counts as a full disk too.
    """
    full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
    if not full and isinstance(e, Exception) and not isinstance(e, InputError):
        with contextlib.suppress(OSError):
            full = shutil.disk_usage(Path(path).parent).free < 2**20
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) if full else None


@contextlib.contextmanager
def atomic_file(path, mode="w", **kw):
    """Open a temporary file beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a file")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        with open(tmp, mode, **kw) as f:
            yield f
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        full = disk_full(e, path)
        if full:
            raise full from None
        raise


def write_json(path, obj):
    """Write `obj` as indented JSON, atomically."""
    with atomic_file(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a temporary directory beside `path`; it replaces `path` only if the block succeeds.

    An existing `path` is replaced whole, so readers never see a mix of old and new files. The
    finished temporary directory is first renamed `.NAME.new`, then the old `path` is moved aside
    to `.NAME.old`, then `.NAME.new` becomes `path`: a kill between those renames leaves a complete
    `.NAME.new`, which `recover_dir` (run here first, and by `train --resume`) puts in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: is a file, expected a directory (or a path that does not exist yet)")
    new, old = _beside(path, "new"), _beside(path, "old")
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the directory the usual permissions
    try:
        yield tmp
        os.replace(tmp, new)  # complete from here on: a kill is recovered by recover_dir
        if path.exists():
            os.replace(path, old)
        os.replace(new, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if new.is_dir():  # interrupted between the renames: finish the swap
            recover_dir(path)
        full = disk_full(e, path)
        if full:
            raise full from None
        raise


def _beside(path, tag):
    return path.parent / f".{path.name}.{tag}"


def recover_dir(path):
    """Finish an all-or-nothing directory write (`atomic_dir`) that a kill interrupted; drop its leftovers.

    A `.NAME.new` is a complete copy that had not yet replaced `path`: it becomes `path`. A `.NAME.old`
    is the replaced copy and `.NAME.*.tmp` folders were never finished: they are deleted. Returns
    True if a complete copy was put in place.
    """
    path = Path(path)
    new, old = _beside(path, "new"), _beside(path, "old")
    recovered = new.is_dir()
    if recovered:
        if path.is_dir():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(new, path)
    shutil.rmtree(old, ignore_errors=True)
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
    return recovered


def iter_jsonl(path):
    """Yield (line number, dict) for each non-blank line of a JSONL file; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"{path}:{n}: not valid UTF-8 (byte 0x{raw[e.start]:02x}); save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{n}: expected a JSON object, found {type(row).__name__}")
            yield n, row


def read_jsonl(path, fields):
    """Rows of a JSONL file as dicts; each must have `fields` (name → type). Errors name the line.

    Blank lines are skipped. An empty file is an error: nothing to train or score on.
    """
    rows = []
    for n, row in iter_jsonl(path):
        for name, kind in fields.items():
            if name not in row:
                raise InputError(f"{path}:{n}: missing field '{name}'")
            if not isinstance(row[name], kind):
                raise InputError(f"{path}:{n}: field '{name}' is {type(row[name]).__name__}, expected {kind.__name__}")
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: no rows (the file is empty)")
    return rows
