"""Reading and writing files safely: strict readers with user-facing errors, and all-or-nothing writes.

Every loader in minigrpo raises `InputError` (minigrpo/errors.py) for bad input, with a message
that names the file, the field or tensor, what was found and what was expected. Every writer goes through
`atomic_file` / `atomic_dir`, so an interrupted run never leaves a half-written output.
"""
import contextlib
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


def read_json(path, what="JSON file"):
    """Load a JSON file, or raise InputError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None


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


@contextlib.contextmanager
def atomic_file(path, mode="w", **kw):
    """Open a temporary file beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        with open(tmp, mode, **kw) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path, obj):
    """Write `obj` as indented JSON, atomically."""
    with atomic_file(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a temporary directory beside `path`; it replaces `path` only if the block succeeds.

    An existing `path` is replaced whole (moved aside, then deleted), so readers never see a mix
    of old and new files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the directory the usual permissions
    try:
        yield tmp
        if path.exists():
            old = path.parent / f".{path.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def iter_jsonl(path):
    """Yield (line number, dict) for each non-blank line of a JSONL file; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
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
