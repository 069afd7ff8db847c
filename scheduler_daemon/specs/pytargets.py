"""Python job targets: where they are imported from (`python_path:`), "module:function" → the
callable, and whether given keyword arguments fit it.

Used when a config is loaded for `check`, `run` and a reload (so a target that cannot be called is
a config error, not a failed fire at 3 a.m.), and by the python action at run time.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


class TargetError(Exception):
    """A target that cannot be called; the message says why, in the config's words."""


def resolve(target: str) -> Callable[..., Any]:
    """The callable named by ``target`` ("package.module:function", attributes dotted).

    Importing a module runs its code: whatever that raises (SystemExit included) is a TargetError.
    """
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:  # the module's own code may raise anything
        raise TargetError(f"cannot import module {module_name!r}: {_why(exc)}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"module {module_name!r} has no attribute {attr!r}") from None
        except Exception as exc:  # a module's __getattr__, say
            raise TargetError(
                f"cannot get {attr!r} from module {module_name!r}: {_why(exc)}"
            ) from exc
    if not callable(obj):
        raise TargetError(f"{target} is not callable (it is {type(obj).__name__!r})")
    return obj  # type: ignore[no-any-return]


def _why(exc: BaseException) -> str:
    if isinstance(exc, ImportError):
        return str(exc)  # "No module named 'x'" says it all
    return f"{type(exc).__name__}: {exc}"


def signature_of(func: Callable[..., Any]) -> inspect.Signature | None:
    """What ``func`` accepts, or None when Python cannot tell (some builtins).

    The function's own signature, not that of what a decorator wraps: a decorator may add or
    consume arguments, and a job that would run must never be refused for its wrapper's sake.
    """
    try:
        return inspect.signature(func, follow_wrapped=False)
    except (TypeError, ValueError):
        return None


def takes(signature: inspect.Signature | None, name: str) -> bool:
    """Whether a function of ``signature`` accepts the keyword ``name`` (unknown: it does)."""
    if signature is None:
        return True
    parameter = signature.parameters.get(name)
    if parameter is not None:
        return parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    return any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())


def bad_arguments(
    signature: inspect.Signature | None, kwargs: Mapping[str, Any], *, partial: bool = False
) -> str | None:
    """Why ``kwargs`` cannot be passed to a function of ``signature``; None when they can.

    An unknown keyword is named before a missing one (a typo is both). ``partial``: required
    arguments may be missing (a run may give them).
    """
    if signature is None:
        return None
    try:
        signature.bind_partial(**kwargs)
        if not partial:
            signature.bind(**kwargs)
    except TypeError as exc:
        return _worded(str(exc), signature)
    return None


_UNEXPECTED = re.compile(r"got an unexpected keyword argument '(.+)'")


def _worded(message: str, signature: inspect.Signature) -> str:
    unexpected = _UNEXPECTED.fullmatch(message)
    if unexpected is None:
        return message
    name = unexpected.group(1)
    close = difflib.get_close_matches(name, list(signature.parameters), n=1)
    return f"unexpected keyword argument {name!r}" + (
        f"; did you mean {close[0]!r}?" if close else ""
    )


# -- python_path -------------------------------------------------------------------------------

_lock = threading.Lock()
_inserted: tuple[str, ...] = ()  # the sys.path entries the current python_path put there


def use_python_path(directories: Sequence[Path | str]) -> tuple[str, ...]:
    """Put ``directories`` first on sys.path, in place of those an earlier call put there.

    A directory already on sys.path (from PYTHONPATH, say) is left where it is. Returns the
    previous python_path, to go back to it (a reload that is refused).
    """
    global _inserted
    wanted = [str(d) for d in directories]
    with _lock:
        previous = _inserted
        for entry in previous:
            if entry in sys.path:
                sys.path.remove(entry)
        inserted = [entry for entry in dict.fromkeys(wanted) if entry not in sys.path]
        sys.path[:0] = inserted
        _inserted = tuple(inserted)
    # Files written since a directory was last listed (a module deployed, then SIGHUP) are found.
    importlib.invalidate_caches()
    return previous


def python_path_in_use() -> tuple[str, ...]:
    """The sys.path entries the current python_path put there."""
    return _inserted
