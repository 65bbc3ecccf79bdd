"""One artifact cache, keyed by what an artifact is made from and by the code that makes it.

A cached artifact (converted weights, decoded datasets, sparse or fine-tuned models,
inversions, features) lives at ``artifacts/<kind>/<key>.<suffix>``. Its key hashes

- the inputs that determine it (a JSON-able mapping: settings, seeds, upstream keys), and
- the *source digest* of the library modules that produce it: each module's syntax tree with
  docstrings removed (comments and layout never reach the tree), together with every
  ``compstudy`` module it imports, directly or transitively.

So editing a docstring or a comment invalidates nothing, editing the code that makes an
artifact invalidates that artifact, and no version number is bumped by hand (design.md,
"Caching and resumption"). The runner keys notebook runs with the same source digest.

Beside each artifact, ``<key>.<suffix>.build.json`` records how long it took to build. While
the runner executes a run it names a *ledger* in ``COMPSTUDY_ARTIFACT_LEDGER`` (kernels and
worker processes inherit it); every artifact a process builds or loads is a line there, so that
the run's page can say how much of its cost an earlier run paid (:func:`reused_build_time`).
"""

from __future__ import annotations

import ast
import contextlib
import contextvars
import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from . import paths
from .results import atomic_write_bytes, atomic_write_text

PACKAGE = "compstudy"
LIB_ROOT = Path(__file__).resolve().parents[1]  # the folder that holds the package
T = TypeVar("T")
_LOOKUP_ONLY = contextvars.ContextVar("lookup_only", default=False)
LEDGER_VARIABLE = "COMPSTUDY_ARTIFACT_LEDGER"
BUILD_RECORD_SUFFIX = ".build.json"


class Missing(LookupError):
    """An artifact that :func:`cached` would have to build inside :func:`lookup_only`."""


@contextlib.contextmanager
def lookup_only() -> Iterator[None]:
    """Within this block :func:`cached` reads artifacts but raises :class:`Missing` instead of
    building one: a chapter runs its steps this way to find which units still need work
    before it starts worker processes for them."""
    token = _LOOKUP_ONLY.set(True)
    try:
        yield
    finally:
        _LOOKUP_ONLY.reset(token)


def digest(obj: Any) -> str:
    """Stable short hash of a JSON-able object (sorted keys; other objects by ``str``)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def normalized_source(source: str) -> str:
    """The code of ``source`` without docstrings, comments or layout (its AST dump)."""
    return ast.dump(_strip_docstrings(ast.parse(source)), include_attributes=False)


def _module_file(name: str, root: Path) -> Path | None:
    """The file of module ``name`` under ``root`` (a package's ``__init__.py``), if any."""
    base = root.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _absolute(name: str | None, level: int, importer: str, root: Path) -> str:
    """Resolve a (possibly relative) ``from`` import as seen from module ``importer``."""
    if level == 0:
        return name or ""
    is_package = (root.joinpath(*importer.split(".")) / "__init__.py").is_file()
    base = importer if is_package else importer.rpartition(".")[0]
    for _ in range(level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{name}" if name else base


def imported_modules(source: str, importer: str = PACKAGE, root: Path = LIB_ROOT) -> set[str]:
    """The ``compstudy`` modules that ``source`` imports (anywhere, also inside functions),
    with the packages that contain them."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, importer, root)
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in candidates:
            if name.split(".")[0] == PACKAGE and _module_file(name, root) is not None:
                parts = name.split(".")
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return found


_PARSED: dict[tuple[str, Path, str], tuple[str, frozenset[str]]] = {}


def _module_source(name: str, root: Path) -> tuple[str, frozenset[str]]:
    """Hash of a module's normalised code, and the modules it imports.

    Memoised by the file's text, not its mtime: an edit within the clock's resolution
    that keeps the size would otherwise go unseen.
    """
    path = _module_file(name, root)
    if path is None:
        raise ModuleNotFoundError(f"no module {name} under {root}", name=name)
    source = path.read_text()
    memo = (name, root, source)
    if memo not in _PARSED:
        code = hashlib.sha256(normalized_source(source).encode()).hexdigest()
        _PARSED[memo] = code, frozenset(imported_modules(source, name, root))
    return _PARSED[memo]


def module_closure(names: Iterable[str], root: Path = LIB_ROOT) -> list[str]:
    """``names`` and every ``compstudy`` module they import, transitively, sorted."""
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_module_source(name, root)[1])
    return sorted(seen)


def source_digest(*code: ModuleType | Callable | str, root: Path = LIB_ROOT) -> str:
    """Digest of the code that produces something: the given modules (or the modules of the
    given functions/classes, or module names) and everything they import from ``compstudy``."""
    names = []
    for item in code:
        if isinstance(item, str):
            names.append(item)
        elif isinstance(item, ModuleType):
            names.append(item.__name__)
        else:
            names.append(item.__module__)
    return digest({name: _module_source(name, root)[0] for name in module_closure(names, root)})


def artifact_path(kind: str, inputs: Mapping[str, Any], code: Iterable[ModuleType | Callable | str],
                  suffix: str = "pt") -> Path:
    """Where the artifact of ``kind`` made from ``inputs`` by ``code`` is cached."""
    key = digest({"inputs": inputs, "code": source_digest(*code)})
    return paths.ARTIFACTS_DIR / kind / f"{key}.{suffix}"


def torch_bytes(obj: Any) -> bytes:
    import torch  # here, not at the top: config and the runner import this module

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def torch_load(path: Path) -> Any:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def cached(kind: str, inputs: Mapping[str, Any], code: Iterable[ModuleType | Callable | str],
           build: Callable[[], T], save: Callable[[T], bytes] = torch_bytes,
           load: Callable[[Path], T] = torch_load, suffix: str = "pt") -> T:
    """Return the artifact from the cache, or ``build()`` it and cache it atomically.

    ``save`` turns the object into bytes (default: ``torch.save`` of it; keep objects to
    tensors, state dicts and plain data, never whole modules), ``load`` reads the file back.
    """
    path = artifact_path(kind, inputs, code, suffix)
    if path.exists():
        obj = load(path)
        _log_use(path, built=False)
        return obj
    if _LOOKUP_ONLY.get():
        raise Missing(path)
    start = time.perf_counter()
    obj = build()
    atomic_write_bytes(path, save(obj))
    seconds = round(time.perf_counter() - start, 1)
    atomic_write_text(_build_record(path), json.dumps({"build_seconds": seconds}))
    _log_use(path, built=True)
    return obj


def _build_record(path: Path) -> Path:
    return path.with_name(path.name + BUILD_RECORD_SUFFIX)


def build_seconds(path: Path) -> float | None:
    """The wall seconds ``cached`` took to build the artifact at ``path`` (in the process that
    built it, artifacts it built on the way included); None when not recorded."""
    record = _build_record(path)
    return json.loads(record.read_text())["build_seconds"] if record.exists() else None


def _log_use(path: Path, built: bool) -> None:
    """One line in the run's ledger, when a run names one: short enough that appends from the
    run's several processes never interleave."""
    ledger = os.environ.get(LEDGER_VARIABLE)
    if ledger:
        with open(ledger, "a") as file:
            file.write(json.dumps({"artifact": str(path), "built": built}) + "\n")


def reused_build_time(ledger: Path) -> tuple[int, float]:
    """The artifacts that a run loaded from the cache without building them itself, and the
    sum of their build seconds (:func:`build_seconds`; one process each, so with several
    workers more than the wall time they would take): what an earlier run, or the same run
    before its config or code changed, paid for these results."""
    if not ledger.exists():
        return 0, 0.0
    entries = [json.loads(line) for line in ledger.read_text().splitlines() if line.endswith("}")]
    built = {e["artifact"] for e in entries if e["built"]}
    reused = {e["artifact"] for e in entries if not e["built"]} - built
    return len(reused), round(sum(build_seconds(Path(a)) or 0.0 for a in reused), 1)
