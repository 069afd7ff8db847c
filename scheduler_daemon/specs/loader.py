"""config.yaml → Config: every problem reported in one pass as ``file:line: path: message``.

The models validate everything; this module reads the file (lines, duplicate keys and ``${VAR}``
by ``yamlsource``), lays the environment overrides over it, and maps each problem's location back
to its line — a value a job took from ``defaults:`` is reported at its line there.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Iterator, Mapping
from itertools import compress
from operator import attrgetter
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from scheduler_daemon.errors import ConfigError, ConfigUnreadable, as_whom
from scheduler_daemon.specs import pytargets, yamlsource
from scheduler_daemon.specs.job_blocks import JobBlocks
from scheduler_daemon.specs.models import SCHEDULE_KEYS, Config, JobSpec
from scheduler_daemon.specs.redaction import dump_places
from scheduler_daemon.specs.spec import Loc, problems_of
from scheduler_daemon.specs.values import Templated, got

# Environment variable → the setting it overrides (its location in the config).
ENV_OVERRIDES: dict[str, Loc] = {
    "SCHEDULER_DATABASE_URL": ("database", "url"),
    "SCHEDULER_MAX_CONCURRENCY": ("max_concurrency",),
    "SCHEDULER_TIMEZONE": ("timezone",),
}


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Building a large config allocates millions of objects and no garbage cycles; without this,
    repeated full collections over the growing heap made 100k jobs take twice as long."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# Computes a job's first fire (raising if it cannot): the schedules live in a layer above this one.
FirstFire = Callable[[JobSpec], object]


def load_config(
    path: str | Path,
    *,
    environ: Mapping[str, str] | None = None,
    first_fire: FirstFire | None = None,
    import_targets: bool = False,
    blocks: JobBlocks | None = None,
) -> Config:
    """Read, interpolate and validate a config file; raise ConfigError listing every problem.

    Nothing else escapes: an unexpected exception is a ConfigError too (a reload keeps running).
    With ``first_fire``, a job whose first fire cannot be computed is a problem at its schedule.
    With ``import_targets``, the config's python_path is put on sys.path and every python job's
    module imported (running its code): a target that cannot be called, or arguments it does not
    take, are problems at the job; refused, the previous python_path is put back. With
    ``blocks``, jobs whose text is unchanged since it last loaded are not parsed again.
    """
    display = str(path)
    environ = os.environ if environ is None else environ
    try:
        return _load(path, display, environ, first_fire, import_targets, blocks)
    except ConfigError:
        raise
    except Exception as exc:  # a bug: still a refusal with the file's name, never a crash
        problem = f"{display}:1: cannot load the config: unexpected {type(exc).__name__}"
        raise ConfigError([problem]) from exc


def _load(
    path: str | Path,
    display: str,
    environ: Mapping[str, str],
    first_fire: FirstFire | None,
    import_targets: bool,
    blocks: JobBlocks | None,
) -> Config:
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigUnreadable(f"no config file at {display}", missing=True) from None
    except OSError as exc:
        raise ConfigUnreadable(
            f"cannot read config file {display}: {exc.strerror or exc}{as_whom()}"
        ) from None
    if blocks is not None:
        with _gc_paused():
            config = blocks.load(
                text, lambda frame: _frame(frame, file, display, environ), environ, first_fire
            )
        if config is not None and not (import_targets and _targets_refused(config)):
            return config
    try:
        with _gc_paused():
            source = yamlsource.parse(text, environ)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{display}:{line}: invalid YAML: {problem}"]) from None
    report = _Report(display, source)
    for p_path, p_line, message in source.problems:
        report.add(p_path, message, p_line)
    config = _validate(source, file.resolve(), environ, report)
    if config is not None and first_fire is not None:
        _check_first_fires(config, first_fire, report)
    if config is not None and import_targets:
        _import_targets(config, report)
    if report.items:
        raise ConfigError([message for _, message in sorted(report.items, key=lambda x: x[0])])
    assert config is not None
    if blocks is not None:
        blocks.adopt(config)
    return config


def _validate(
    source: yamlsource.Source, file: Path, environ: Mapping[str, str], report: _Report
) -> Config | None:
    data = source.data
    if data is None and source.problems:
        return None  # the document was refused as a whole (an alias bomb)
    if data is None:
        report.add((), "the file is empty: expected a mapping with a `jobs:` section")
        return None
    if not isinstance(data, dict):
        report.add((), f"expected a mapping at the top level, got {got(data)}")
        return None
    data, overridden = _with_environment(data, environ)
    try:
        with _gc_paused():
            config = Config.model_validate(
                data, context={"base": file.parent, "path": file}, by_name=False
            )
    except ValidationError as exc:
        for loc, message in problems_of(exc):
            if loc in overridden:
                report.items.append(
                    (0, f"{report.display}: environment {overridden[loc]}: {message}")
                )
            else:
                report.add(loc, message, _line(source, loc))
        return None
    _remember_templates(config, source)
    return config


def _frame(
    text: str, file: Path, display: str, environ: Mapping[str, str]
) -> tuple[Config, yamlsource.Source] | None:
    """The config ``text`` holds, if it has no problem at all (else None: load it whole)."""
    try:
        source = yamlsource.parse(text, environ)
    except yaml.YAMLError:
        return None
    report = _Report(display, source)
    config = _validate(source, file.resolve(), environ, report)
    if config is None or source.problems or report.items:
        return None
    return config, source


def _targets_refused(config: Config) -> bool:
    """``_import_targets`` for a config loaded job by job: whether anything was refused (the
    whole-file load then says where)."""
    report = _Report("", yamlsource.Source(data=None))
    _import_targets(config, report)
    return bool(report.items)


def _import_targets(config: Config, report: _Report) -> None:
    """Put python_path on sys.path and check every target; with any problem reported, the
    previous python_path is put back."""
    previous = pytargets.use_python_path(config.python_path)
    _check_targets(config, report)
    if report.items:
        pytargets.use_python_path(previous)


def _check_first_fires(config: Config, first_fire: FirstFire, report: _Report) -> None:
    """Every job's first fire, computed once here so that no schedule fails in the daemon."""
    for job in config.jobs:
        try:
            first_fire(job)
        except Exception as exc:  # noqa: BLE001 - whatever a schedule raises is the job's problem
            field = next(k for k in SCHEDULE_KEYS if getattr(job, k) is not None)
            loc = ("jobs", job.name, field)
            report.add(
                loc,
                f"expected a schedule whose next fire can be computed, got {type(exc).__name__}",
                _line(report.source, loc),
            )


def _check_targets(config: Config, report: _Report) -> None:
    """Every python_path directory exists; every python job's target imports, is callable and
    takes the job's `args` (all of its required ones too, unless the job is disabled: a manual
    run may give those)."""
    for i, directory in enumerate(config.python_path):
        if not directory.is_dir():
            item: Loc = ("python_path", i)
            loc = item if item in report.source.lines else ("python_path",)
            report.add(loc, f"expected an existing directory, got {directory}")
    targets = _Targets()
    for job in compress(config.jobs, map(attrgetter("python"), config.jobs)):  # 100k: at C speed
        assert job.python is not None
        problem = targets.problem(job.python, tuple(job.args), partial=not job.enabled)
        if problem is not None:
            loc = ("jobs", job.name, "args" if problem[0] == "args" else "python")
            report.add(loc, problem[1], _line(report.source, loc))


def target_problem(target: str, names: tuple[str, ...], *, partial: bool) -> tuple[str, str] | None:
    """One python target checked as a config's are: None, or where and what is wrong."""
    return _Targets().problem(target, names, partial=partial)


class _Targets:
    """Each target imported once, each set of argument names bound once (100k jobs may share
    one function)."""

    def __init__(self) -> None:
        self._funcs: dict[str, Callable[..., Any] | pytargets.TargetError] = {}
        self._bound: dict[tuple[str, tuple[str, ...], bool], str | None] = {}

    def problem(
        self, target: str, names: tuple[str, ...], *, partial: bool
    ) -> tuple[str, str] | None:
        """None, or where ("python" or "args") and what is wrong."""
        func = self._funcs.get(target)
        if func is None:
            try:
                func = pytargets.resolve(target)
            except pytargets.TargetError as exc:
                func = exc
            self._funcs[target] = func
        if isinstance(func, pytargets.TargetError):
            return "python", str(func)
        key = (target, names, partial)
        if key not in self._bound:
            signature = pytargets.signature_of(func)
            kwargs = dict.fromkeys(names)
            self._bound[key] = pytargets.bad_arguments(signature, kwargs, partial=partial)
        bad = self._bound[key]
        where = "args" if names else "python"
        return None if bad is None else (where, f"bad arguments for {target}: {bad}")


def _with_environment(
    data: dict[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, Any], dict[Loc, str]]:
    """The file's settings with the environment's over them, and which ones it set."""
    overridden: dict[Loc, str] = {}
    for var, loc in ENV_OVERRIDES.items():
        value = environ.get(var)
        if value:
            data = _with(data, loc, Templated(value, f"${{{var}}}"))
            overridden[loc] = var
    if environ.get("STATE_DIRECTORY") and not _absolute(data.get("state_dir")):
        # systemd's StateDirectory=: the one place a sandboxed unit may write. A relative
        # state_dir (the quick start's ./var) would land next to the config, in read-only /etc.
        data = {**data, "state_dir": environ["STATE_DIRECTORY"]}
    return data, overridden


def _absolute(state_dir: Any) -> bool:
    """Whether the config gives an absolute state_dir (then it is used as written)."""
    return isinstance(state_dir, str) and Path(state_dir.strip()).expanduser().is_absolute()


def _with(data: Any, loc: Loc, value: Any) -> dict[str, Any]:
    """A copy of the mapping ``data`` (or a new one) with ``value`` at ``loc``."""
    node = dict(data) if isinstance(data, dict) else {}
    key = str(loc[0])
    node[key] = _with(node.get(key), loc[1:], value) if len(loc) > 1 else value
    return node


def _line(source: yamlsource.Source, loc: Loc) -> int:
    """The line of ``loc``; under a job, a key the job took from ``defaults:`` is there."""
    if len(loc) > 2 and loc[0] == "jobs":
        job, rest = loc[:2], loc[2:]
        for depth in range(len(rest), 0, -1):
            for base in (job, ("defaults",)):
                if (*base, *rest[:depth]) in source.lines:
                    return source.lines[(*base, *rest[:depth])]
        return source.line(job)
    return source.line(loc)


def _remember_templates(config: Config, source: yamlsource.Source) -> None:
    """Give each job the ${...} strings it holds as written: its own, and those it took from
    ``defaults:`` (a default the job overrides at the same place is not its)."""
    defaults: dict[tuple[str | int, ...], str] = {}
    by_job: dict[str, dict[tuple[str | int, ...], str]] = {}
    for t_path, text in source.templates.items():
        if len(t_path) > 1 and t_path[0] == "defaults":
            defaults[t_path[1:]] = text
        elif len(t_path) > 2 and t_path[0] == "jobs":
            by_job.setdefault(str(t_path[1]), {})[t_path[2:]] = text
    for job in config.jobs:
        own = by_job.get(job.name, {})
        taken = {
            place: text
            for place, text in defaults.items()
            if ("jobs", job.name, *place) not in source.lines
        }
        if own or taken:
            job.with_templates(dump_places({**taken, **own}))


class _Report:
    """Collects ``file:line: path: message`` lines, with their line for sorting."""

    def __init__(self, display: str, source: yamlsource.Source) -> None:
        self.display = display
        self.source = source
        self.items: list[tuple[int, str]] = []

    def add(self, path: Loc, message: str, line: int | None = None) -> None:
        where = ".".join(str(p) for p in path)
        at = line if line is not None else self.source.line(path)
        prefix = f"{self.display}:{at}: "
        self.items.append((at, f"{prefix}{where}: {message}" if where else f"{prefix}{message}"))
