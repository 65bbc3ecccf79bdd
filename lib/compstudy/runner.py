"""Execute notebooks with papermill over the YAML configs, with a cache and resumption.

``python -m compstudy.runner run NB RUN --profile P`` executes ``notebooks/NB.py`` with
``configs/P/NB/RUN.yaml`` into ``book/runs/NB/RUN.ipynb``; ``all --profile P`` does every
run of every notebook in dependency order; ``check`` validates every YAML of every profile.

A run's key hashes its resolved parameters, the code it runs (the notebook's code and the
``compstudy`` modules it imports, directly or not, without docstrings and comments), the
keys of the upstream runs its config declares and the contents of the result files it
declares it reads (``INPUTS``). A run whose executed notebook and results folder both carry
the current key is skipped. The executed notebook is written to a temporary name and renamed
on success, so a failed run never looks finished. The results folder remembers the key its
rows were computed under: a rerun with the same key resumes (the notebook skips finished
rows), a new key starts the results afresh; a finished run adds its wall time there.
``all`` executes its runs in dependency order, ``--jobs`` at a time, in as many kernels
(``shared_kernel``): each run starts from an empty namespace, but torch, timm and the rest
are imported once per kernel, not once per run.

Run pages are for readers: every code cell but the parameters is collapsed (``hide-input``),
and the executed notebook keeps no path of the machine that ran it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import queue
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from functools import cache as memoize
from pathlib import Path
from typing import Any

import nbformat

from . import cache, config, paths, scale
from .errors import ConfigError
from .results import atomic_write_text

KEY_FILE = ".run_key"
LEDGER_FILE = "artifact_ledger.jsonl"  # the artifacts a run built or loaded (cache.reused_build_time)
Run = tuple[str, str]  # (notebook, run name)
SHOWN_TAGS = {"parameters", "injected-parameters"}  # code cells whose input a page shows
_PLACED_TAGS = {"hide-input", "remove-input", "hide-cell", "remove-cell"}


@memoize
def _notebook_code(source: str, root: Path) -> tuple[str, tuple[str, ...]]:
    """Digest of a notebook's own code, and the ``compstudy`` modules it imports."""
    try:
        own = cache.digest(cache.normalized_source(source))
    except SyntaxError:  # e.g. an uncommented IPython magic: fall back to the text
        own = cache.digest(source)
    return own, tuple(sorted(cache.imported_modules(source, cache.PACKAGE, root)))


def code_digest(notebook: str, root: Path = cache.LIB_ROOT) -> str:
    """Digest of the code a notebook runs: its own code (markdown, comments and docstrings
    excluded) and the source digest of the ``compstudy`` modules it imports, transitively.

    ``root`` is the folder that holds the ``compstudy`` package (tests point it at a copy).
    """
    own, modules = _notebook_code(config.notebook_path(notebook).read_text(), root)
    return cache.digest({"notebook": own, "modules": cache.source_digest(*modules, root=root)})


def upstream_runs(notebook: str) -> tuple[tuple[str, str], ...]:
    """The (notebook, run) pairs a notebook's config declares it reads."""
    pairs = []
    for ref in config.config_class(notebook).UPSTREAM:
        upstream, _, run_name = ref.partition("/")
        pairs.append((upstream, run_name or "main"))
    return tuple(pairs)


def input_digests(notebook: str, profile: str) -> dict[str, str]:
    """sha256 of each file under ``results/<profile>/`` that matches the notebook's ``INPUTS``,
    except the notebook's own results (its wall time would otherwise change its key)."""
    base = paths.RESULTS_DIR / profile
    found = {path for pattern in config.config_class(notebook).INPUTS for path in base.glob(pattern)
             if path.is_file() and path.relative_to(base).parts[0] != notebook}
    return {path.relative_to(base).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(found)}


def run_key(notebook: str, params: Mapping[str, Any], root: Path = cache.LIB_ROOT,
            _path: tuple[str, ...] = ()) -> str:
    """Key of a run with the resolved ``params``: parameters, code, upstream keys and inputs.

    The upstream keys are computed from the repository (their YAML, notebook and modules),
    never read from executed notebooks, so a stale upstream page cannot hide a change.
    """
    if notebook in _path:
        raise ConfigError(f"upstream runs form a cycle: {' -> '.join((*_path, notebook))}")
    upstream = {}
    for name, run_name in upstream_runs(notebook):
        up = config.load_config(params["profile"], name, run_name)
        upstream[f"{name}/{run_name}"] = run_key(name, up.params, root, (*_path, notebook))
    parts = {"params": dict(params), "code": code_digest(notebook, root), "upstream": upstream}
    if config.config_class(notebook).INPUTS:  # only then: the keys of other runs stay as they were
        parts["inputs"] = input_digests(notebook, params["profile"])
    return cache.digest(parts)


def key_of(profile: str, notebook: str, run_name: str, root: Path = cache.LIB_ROOT) -> str:
    """The current key of one run of the repository."""
    return run_key(notebook, config.load_config(profile, notebook, run_name).params, root)


def output_path(notebook: str, run: str) -> Path:
    return paths.RUNS_DIR / notebook / f"{run}.ipynb"


def stored_key(notebook_file: Path) -> str | None:
    if not notebook_file.exists():
        return None
    try:
        return nbformat.read(notebook_file, as_version=4).metadata.get("compstudy", {}).get("key")
    except Exception:  # a corrupt notebook is simply stale
        return None


def _label(notebook_node, notebook: str, run_name: str, profile: str) -> None:
    """Title the page with its run and profile, and say how to reproduce it.

    Every run of a notebook shares its H1; without this the book's navigation would list
    identical titles for the main run and each ablation. The navigation shows the H1, so a
    subtitle after the title's first colon moves to the line below it.
    """
    first, subtitle = notebook_node.cells[0], ""
    if first.cell_type == "markdown" and first.source.startswith("# "):
        title, _, rest = first.source.partition("\n")
        title, _, subtitle = title.partition(": ")
        first.source = f"{title} · {run_name} ({profile})\n{rest}"
    reproduce = nbformat.v4.new_markdown_cell(
        (f"**{subtitle[0].upper()}{subtitle[1:]}.** " if subtitle else "")
        + f"*Run `{run_name}` of profile `{profile}`. Reproduce with "
        f"`make run NB={notebook} RUN={run_name} PROFILE={profile}`; its overrides are in "
        f"`configs/{profile}/{notebook}/{run_name}.yaml`.*")
    notebook_node.cells.insert(1, reproduce)


def _collapse_code(notebook_node) -> None:
    """Tag every code cell ``hide-input`` but the parameters, so pages show results first.

    Cells that already say how to show their input (``remove-input``, ``hide-cell``, ...)
    keep their tags.
    """
    for cell in notebook_node.cells:
        tags = cell.metadata.get("tags", [])
        if cell.cell_type == "code" and not (set(tags) & (SHOWN_TAGS | _PLACED_TAGS)):
            cell.metadata["tags"] = [*tags, "hide-input"]


def _kernel_config():
    """Kernel settings: CurveZMQ-encrypted sockets where pyzmq and the kernelspec support them.

    Without them ipykernel warns on every start that it runs over unencrypted TCP.
    """
    import zmq
    from traitlets.config import Config

    policy = "auto" if zmq.has("curve") else "disabled"
    return Config({"KernelManager": {"transport_encryption": policy}})


def _results_key(results_dir: Path) -> str | None:
    """The key the results folder's rows were computed under (None once it is deleted)."""
    key_file = results_dir / KEY_FILE
    return key_file.read_text() if key_file.exists() else None


def _prepare_results(results_dir: Path, key: str) -> None:
    """Keep rows computed under ``key`` (resume); drop rows from another config or code."""
    if results_dir.exists() and _results_key(results_dir) != key:
        shutil.rmtree(results_dir)
    atomic_write_text(results_dir / KEY_FILE, key)


@contextmanager
def shared_kernel(**env: str) -> Iterator[Any]:
    """A kernel that several runs execute in, one after another (``run(..., kernel=)``).

    A fresh kernel costs about 13 s on the 2-core machine before a run computes anything:
    4 s to start and 9 s to import torch, timm (which imports torchvision and torch._dynamo),
    seaborn and the study; in the ``smoke`` profile that is half of every run. ``env`` adds
    environment variables for the kernel.
    """
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    manager = AsyncKernelManager(kernel_name="python3", config=_kernel_config())
    run_sync(manager.start_kernel)(cwd=str(paths.REPO_ROOT), env={**os.environ, **env})
    try:
        yield manager
    finally:
        if run_sync(manager.is_alive)():  # papermill stops it on an interrupt
            run_sync(manager.shutdown_kernel)(now=True)


@contextmanager
def _ledger_for_own_kernel(ledger: Path | None) -> Iterator[None]:
    """Name ``ledger`` (``cache.LEDGER_VARIABLE``) to the kernel that papermill starts for one
    run, which inherits this process's environment; nothing when ``ledger`` is None."""
    if ledger is None:
        yield
        return
    before = os.environ.get(cache.LEDGER_VARIABLE)
    os.environ[cache.LEDGER_VARIABLE] = str(ledger)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(cache.LEDGER_VARIABLE)
        else:
            os.environ[cache.LEDGER_VARIABLE] = before


def _empty_namespace(manager, ledger: Path) -> None:
    """Start the next run in ``manager``'s kernel from an empty namespace (what ``%reset -f``
    does, once: each reset collects garbage, about a second with torch loaded) with no figure
    open, naming the run's artifact ledger (``cache.LEDGER_VARIABLE``) to the kernel and the
    workers it will spawn; modules stay imported. A kernel that died is restarted.

    What a module keeps between runs is read-only (the ``functools.cache``d architecture
    costs, the op counts per architecture) or reset by every run (``seeding.seed_everything``
    seeds and sets the threads, ``plots.set_style`` the style), so a run's numbers do not
    depend on what ran before it.
    """
    from jupyter_client import BlockingKernelClient
    from jupyter_core.utils import run_sync

    if not run_sync(manager.is_alive)():
        run_sync(manager.restart_kernel)(now=True)
    client = BlockingKernelClient()
    client.load_connection_info(manager.get_connection_info())
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        reply = client.execute_interactive(
            "import matplotlib.pyplot\nmatplotlib.pyplot.close('all')\nget_ipython().reset(new_session=False)\n"
            f"__import__('os').environ[{cache.LEDGER_VARIABLE!r}] = {str(ledger)!r}",
            store_history=False, timeout=60, output_hook=lambda message: None)
    finally:
        client.stop_channels()
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"could not empty the shared kernel: {reply['content'].get('evalue')}")


def _number_cells_from_one(notebook_node) -> None:
    """Execution counts as a fresh kernel would give them (a shared kernel keeps counting)."""
    executed = [cell for cell in notebook_node.cells
                if cell.cell_type == "code" and cell.get("execution_count") is not None]
    for count, cell in enumerate(executed, start=1):
        cell.execution_count = count
        for output in cell.outputs:
            if output.get("execution_count") is not None:
                output.execution_count = count


def run(notebook: str, run_name: str, profile: str, force: bool = False,
        kernel: Any = None) -> bool:
    """Execute one run, in its own kernel or in a ``shared_kernel``; return False when it was
    skipped because its cache key is unchanged."""
    overrides = config.read_overrides(profile, notebook, run_name)
    cfg = config.config_class(notebook).from_overrides(overrides)
    key = run_key(notebook, cfg.params)
    out = output_path(notebook, run_name)
    if not force and stored_key(out) == key == _results_key(cfg.results_dir):
        print(f"[skip] {notebook}/{run_name} ({profile}): unchanged")
        return False

    import jupytext
    import papermill

    _prepare_results(cfg.results_dir, key)
    out.unlink(missing_ok=True)  # a stale page must not stand in for a run that fails
    source = jupytext.read(config.notebook_path(notebook))
    _label(source, notebook, run_name, profile)
    _collapse_code(source)
    source.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"_tmp_{run_name}.ipynb")
    host_reference = scale.host_reference_seconds()  # before the first run starts
    ledger = cfg.results_dir / LEDGER_FILE  # every execution since the results were reset
    print(f"[run ] {notebook}/{run_name} ({profile})", flush=True)
    start = time.perf_counter()
    try:
        if kernel is not None:
            _empty_namespace(kernel, ledger)
        with _ledger_for_own_kernel(ledger if kernel is None else None):
            executed = papermill.execute_notebook(
                source, str(tmp), parameters=overrides, kernel_name="python3",
                cwd=None if kernel is not None else str(paths.REPO_ROOT),  # a shared kernel started there
                progress_bar=False, config=_kernel_config(), km=kernel)
    except papermill.PapermillExecutionError as error:
        _stopped(cfg.results_dir, tmp, start, host_reference)
        if error.ename == "ConfigError":
            raise ConfigError(error.evalue) from None
        raise
    except BaseException:
        _stopped(cfg.results_dir, tmp, start, host_reference)
        raise
    seconds = time.perf_counter() - start
    _number_cells_from_one(executed)
    executed.metadata["compstudy"] = {"key": key, "profile": profile, "seconds": round(seconds, 1)}
    executed.metadata.papermill.update(  # papermill stores absolute paths and the whole input
        input_path=paths.display_path(config.notebook_path(notebook)),
        output_path=paths.display_path(out))
    nbformat.write(executed, tmp)
    tmp.replace(out)
    scale.record_wall_time(cfg.results_dir, seconds, host_reference, reused=cache.reused_build_time(ledger))
    print(f"[done] {notebook}/{run_name} ({profile}) in {seconds:.0f} s", flush=True)
    return True


def _stopped(results_dir: Path, tmp: Path, start: float, host_reference: float) -> None:
    """An execution that failed or was interrupted: no page, but its time counts towards the
    rows it finished (``scale.record_wall_time``)."""
    tmp.unlink(missing_ok=True)
    scale.record_wall_time(results_dir, time.perf_counter() - start, host_reference, finished=False,
                           reused=cache.reused_build_time(results_dir / LEDGER_FILE))


def schedule(profile: str, notebooks: list[str] | None = None) -> dict[Run, tuple[Run, ...]]:
    """Every run of a profile, in dependency order, with the runs it waits for.

    A run waits for the earlier runs of its notebook (ablations reuse the main run's cached
    models), for the upstream runs its config declares, and, when its config reads other
    notebooks' results (``INPUTS``), for every run of the other notebooks.
    """
    runs = [(notebook, run_name) for notebook in notebooks or config.notebook_names()
            for run_name in config.run_names(profile, notebook)]
    waits = {}
    for position, (notebook, run_name) in enumerate(runs):
        earlier = [item for item in runs[:position] if item[0] == notebook]
        upstream = [item for item in upstream_runs(notebook) if item in runs]
        read = ([item for item in runs if item[0] != notebook]
                if config.config_class(notebook).INPUTS else [])
        waits[(notebook, run_name)] = tuple(dict.fromkeys([*earlier, *upstream, *read]))
    return waits


def run_all(profile: str, notebooks: list[str] | None = None, jobs: int = 1) -> None:
    """Every run of every notebook, ``jobs`` at a time, each once the runs it waits for have
    finished (``schedule``), in ``jobs`` shared kernels.

    Runs that fail are reported at the end; the runs that wait for them are not started.
    With several jobs the kernels' OpenMP threads sleep instead of spinning when idle: two
    spinning two-thread kernels on two cores ran 3x slower each, passive ones as fast as one
    after the other (numpy's BLAS, which can only spin, has one thread anyway:
    ``seeding.seed_everything``). The jobs change the wall time, not the numbers: the
    threads per kernel stay as ``seeding.seed_everything`` sets them.
    """
    jobs = max(1, jobs)
    waiting = schedule(profile, notebooks)
    finished: set[Run] = set()
    failures: dict[Run, str] = {}
    idle_kernels: queue.SimpleQueue = queue.SimpleQueue()

    def execute(item: Run) -> bool:
        kernel = idle_kernels.get()
        try:
            return run(*item, profile, kernel=kernel)
        finally:
            idle_kernels.put(kernel)

    env = {"OMP_WAIT_POLICY": "PASSIVE"} if jobs > 1 else {}
    with ExitStack() as kernels:
        for _ in range(jobs):
            idle_kernels.put(kernels.enter_context(shared_kernel(**env)))
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            running: dict = {}
            while waiting or running:
                for item, waits in list(waiting.items()):
                    if blocked := [w for w in waits if w in failures]:
                        failures[item] = f"not run: {'/'.join(blocked[0])} failed"
                        del waiting[item]
                    elif set(waits) <= finished and len(running) < jobs:
                        running[pool.submit(execute, item)] = item
                        del waiting[item]
                if not running:  # only runs that wait for each other are left
                    raise ConfigError(f"runs wait for each other: {sorted(waiting)}")
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    item = running.pop(future)
                    if (error := future.exception()) is None:
                        finished.add(item)
                    else:  # keep going, fail at the end (d2l / cal-itp habit)
                        failures[item] = f"{type(error).__name__}: {error}"
    if failures:
        raise RuntimeError("failed runs:\n  " + "\n  ".join(
            f"{'/'.join(item)}: {reason}" for item, reason in failures.items()))


def check_all() -> int:
    """Validate every YAML of every profile through its notebook's typed config, and the
    upstream runs each declares (by computing its key)."""
    count = 0
    for profile in config.PROFILES:
        for folder in sorted((paths.CONFIGS_DIR / profile).glob("*")):
            for yaml_file in sorted(folder.glob("*.yaml")):
                cfg = config.load_config(profile, folder.name, yaml_file.stem)
                run_key(folder.name, cfg.params)
                count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compstudy.runner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run", help="execute one run of one notebook")
    one.add_argument("notebook")
    one.add_argument("run", nargs="?", default="main")
    one.add_argument("--profile", default="cpu")
    one.add_argument("--force", action="store_true", help="ignore the cache")
    every = sub.add_parser("all", help="every run of every notebook, in dependency order")
    every.add_argument("--profile", default="cpu")
    every.add_argument("--jobs", type=int, default=1, help="runs executed at once (default 1)")
    sub.add_parser("check", help="validate every YAML of every profile")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            config.check_profile(args.profile)
            run(args.notebook, args.run, args.profile, force=args.force)
        elif args.command == "all":
            run_all(config.check_profile(args.profile), jobs=args.jobs)
        else:
            print(f"{check_all()} configs valid")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
