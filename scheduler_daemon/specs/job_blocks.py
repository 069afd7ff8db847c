"""Loading a config job by job: each job's text validated once, then reused while it is unchanged.

A config of 100k jobs took ~13 s to parse and validate as a whole, and a reload that changed one
job paid it all again, as did every restart. When the file's `jobs:` section is written in block
style (each job a key at one indentation: what people and generators write), it is cut into the
*frame* (every other line) and one *block* of lines per job. The frame is always parsed and
validated; a block's JobSpec is kept under its text, and the cache as a whole under a digest of
what a job's validation reads besides its own text (the frame's `defaults` and
`timezone`, the config's folder, HOME, this code). Only new and changed blocks are parsed and
validated; the cache is also kept in ``<state_dir>/config.cache`` (and what later loads
validated in ``config.cache.delta``) for the next start.

Anything unusual falls back to loading the whole file (``None`` here), which gives every problem
its file:line form: no block-style `jobs:`, a block that does not parse on its own (an alias to an
anchor elsewhere), two blocks of one name, `${...}` in `defaults`, any problem at all.
A block with `${...}` is keyed by the values it reads too, and never written to disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from itertools import compress
from operator import attrgetter, not_
from pathlib import Path
from typing import BinaryIO

import pydantic
import structlog

from scheduler_daemon.specs import yamlsource
from scheduler_daemon.specs.models import Config, JobSpec, job_from_file
from scheduler_daemon.specs.redaction import dump_places

log = structlog.get_logger("scheduler_daemon.specs.job_blocks")

CACHE_FILE = "config.cache"
DELTA_FILE = "config.cache.delta"  # what changed since config.cache was written
# Patterns that begin with a newline: the search skips to each newline at C speed, where
# a MULTILINE ^ tries every position (half a second over 100k jobs).
_JOBS_KEY = re.compile(r"\njobs:[ \t]*(?:#[^\n]*)?(?=\n)")
_TOP_LEVEL = re.compile(r"\n[^ #\n]")  # the line after the jobs section
_INDENTED = re.compile(r"\n( +)[^ #\n]")
# A job's first line: its key at the section's indentation. Keys YAML would read otherwise
# (a list item, a complex key, an anchor, alias, tag, block scalar or flow collection) are left
# to the whole-file load.
_NOT_A_KEY = "[" + re.escape("-?&*!|>%@`{[") + "]"  # (a comment, `#`, is no key)
_NAME = attrgetter("name")
_VAR_NAME = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def split(text: str) -> tuple[str, list[str]] | None:
    """The frame (the file with its jobs replaced by ``jobs: {}``) and each job's lines; None
    when the jobs section is not one block-style mapping this can cut safely."""
    text = f"\n{text}"  # every line, the first too, now follows a newline
    key = _JOBS_KEY.search(text)
    if key is None or _JOBS_KEY.search(text, key.end()) or "\n---" in text or "\n..." in text:
        return None
    after = _TOP_LEVEL.search(text, key.end())
    # Every block ends with its newline, the last one too: a job moved last is the same text.
    end = after.start() + 1 if after else len(text)
    section = text[key.end() : end]  # from the newline that ends the `jobs:` line
    first = _INDENTED.search(section)
    if first is None:
        return None
    indent = len(first.group(1))
    if indent > 1 and re.search(rf"\n {{1,{indent - 1}}}[^ #\n]", section):
        return None  # less indented than the jobs: not a mapping this can cut
    if re.search(rf"\n {{{indent}}}{_NOT_A_KEY}", section):
        return None
    # Cut at the start of each key line, a block keeping its last line's newline (a literal
    # scalar's value ends with it), by one regular expression: a Python loop over 100k jobs took
    # 0.2 s. The first part is what precedes the first job (its newline, comments).
    blocks = re.split(rf"(?<=\n)(?= {{{indent}}}[^ #\n])", section)[1:]
    rest = f"\n{text[end:]}" if after else ""
    return f"{text[1 : key.start() + 1]}jobs: {{}}{rest}", blocks


class JobBlocks:
    """The jobs validated from blocks so far, by their text (and the environment values a block
    with `${...}` reads), under the digest of what their validation shares."""

    def __init__(self) -> None:
        self._context = b""
        self._jobs: dict[str, JobSpec] = {}
        # What a full write writes, replaced whole (a reload's thread may load while a save runs):
        # the context and the jobs read no value from the environment.
        self._saved: tuple[bytes, dict[str, JobSpec]] = (b"", {})
        self._validated_since_save: dict[str, JobSpec] = {}  # the save's next record
        self._on_disk: _OnDisk | None = None  # what the cache files hold, once read or written
        self._kept = threading.Lock()  # over the three above: a load and a save may overlap
        self._read = False  # the cache file a previous process left: read at the first load
        self._candidate: tuple[list[str], list[bool], list[int]] | None = None  # for ``adopt``
        self.reused = 0  # in the last load
        self.validated = 0
        self.unsaved = False
        self._saving = threading.Lock()

    def load(
        self,
        text: str,
        frame: Callable[[str], tuple[Config, yamlsource.Source] | None],
        environ: Mapping[str, str],
        first_fire: Callable[[JobSpec], object] | None,
    ) -> Config | None:
        """The config ``text`` holds, its jobs reused where unchanged; None: load it whole (then
        ``adopt`` what that gave). ``frame`` validates the frame (None when it has a problem)."""
        self._candidate = None
        cut = split(text)
        if cut is None:
            return None
        frame_text, blocks = cut
        framed = frame(frame_text)
        if framed is None or any(path[0] == "defaults" for path in framed[1].templates):
            return None
        config = framed[0]
        context = _context_digest(config, environ)
        if context != self._context:
            self._context, self._jobs = context, {}
        self._read_once(config.state_dir)
        # 100k blocks: every walk below is one at C speed (map, compress), which a Python loop
        # over them is not (~50 ms each).
        plain = ["${" not in block for block in blocks]  # read nothing from the environment
        keys = blocks if all(plain) else [_block_key(block, environ) for block in blocks]
        known = self._jobs
        missing = list(compress(range(len(keys)), map(not_, map(known.__contains__, keys))))
        if len(missing) > len(blocks) // 2:
            # A block parsed alone costs ~1.6x its share of the whole file: past half of them
            # new, the whole file is faster, and its jobs are taken in block order.
            self._candidate = (keys, plain, missing)
            return None
        jobs = list(map(known.get, keys))
        for i in missing:
            jobs[i] = _validate(blocks[i], config, environ, first_fire)
        valid: list[JobSpec] = list(filter(None, jobs))
        if len(valid) != len(jobs) or len(set(map(_NAME, valid))) != len(jobs):
            return None  # a problem, or two blocks of one name: the whole-file load says where
        self._keep(keys, valid, plain, missing)
        whole = config.model_copy(update={"jobs": tuple(valid)})
        return None if whole.value_rules() else whole

    def adopt(self, config: Config) -> None:
        """After the whole-file load of the text ``load`` cut: its jobs, in block order."""
        if self._candidate is None:
            return
        keys, plain, new = self._candidate
        self._candidate = None
        if len(keys) == len(config.jobs):
            self._keep(keys, list(config.jobs), plain, new)

    def _keep(
        self, keys: list[str], jobs: list[JobSpec], plain: list[bool], new: list[int]
    ) -> None:
        """The jobs of this load, by key; ``new``: which were not known before it."""
        found = dict(zip(keys, jobs, strict=True))
        kept = found if all(plain) else dict(compress(zip(keys, jobs, strict=True), plain))
        validated = {keys[i]: jobs[i] for i in new if plain[i]}
        self.validated, self.reused = len(new), len(jobs) - len(new)
        with self._kept:
            disk = self._on_disk
            stale = disk is None or disk.context != self._context
            self.unsaved = self.unsaved or stale or bool(validated)
            self._validated_since_save.update(validated)
            self._jobs, self._saved = found, (self._context, kept)

    # -- the copy on disk --------------------------------------------------------------------
    # config.cache holds the jobs as of its last full write, under an id; config.cache.delta
    # then appends, save by save, the jobs validated since (each record under that id). A
    # reload's save writes the jobs it validated, not all of them: pickling 100k jobs held the
    # GIL for 1-2 s, and every fire and API request meanwhile waited its turn (an API change
    # took 80-190 ms instead of 10). A job no longer in the file stays in the records (a key
    # no block has is never looked up) until the next full write: once the records weigh a
    # quarter of it, or a save has a quarter of the jobs to write.

    def save(self, state_dir: Path) -> None:
        """Write the jobs validated since the last save to ``state_dir`` (0600 files)."""
        if not self.unsaved:
            return
        self.unsaved = False  # a load meanwhile sets it again
        with self._saving:  # a reload's save may start while the start's is still writing
            with self._kept:
                context, jobs = self._saved
                validated, self._validated_since_save = self._validated_since_save, {}
                disk = self._on_disk
            try:
                if (
                    disk is None
                    or disk.context != context
                    or disk.appended * 4 >= disk.size
                    or len(validated) * 4 >= len(jobs)
                ):
                    self._write_whole(state_dir / CACHE_FILE, context, jobs)
                elif validated:
                    self._append(state_dir / DELTA_FILE, disk, validated)
            except BaseException:
                with self._kept:
                    self._validated_since_save = {**validated, **self._validated_since_save}
                self.unsaved = True
                raise

    def _write_whole(self, path: Path, context: bytes, jobs: dict[str, JobSpec]) -> None:
        cache_id = os.urandom(16)
        payload = pickle.dumps((_code_digest(), context, jobs, cache_id), pickle.HIGHEST_PROTOCOL)
        # One name: the partial file of a save that was killed is replaced by the next save.
        partial = path.with_name(f".{CACHE_FILE}.partial")
        try:
            partial.unlink(missing_ok=True)  # created anew below: 0600, ours
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(payload)
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        # Records of the previous full write: a crash before this unlink leaves them, ignored
        # (another id).
        path.with_name(DELTA_FILE).unlink(missing_ok=True)
        with self._kept:
            self._on_disk = _OnDisk(cache_id, context, len(payload), 0)

    def _append(self, path: Path, disk: _OnDisk, validated: dict[str, JobSpec]) -> None:
        payload = pickle.dumps((disk.cache_id, validated), pickle.HIGHEST_PROTOCOL)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(payload)
        with self._kept:
            self._on_disk = replace(disk, appended=disk.appended + len(payload))

    def _read_once(self, state_dir: Path) -> None:
        """At the first load: the cache a previous process left, if it is ours and current."""
        if self._read:
            return
        self._read = True
        path = state_dir / CACHE_FILE
        with _private(path) as file:
            if file is None:
                return
            try:
                whole = pickle.load(file)  # our own 0600 file (_private)
            except Exception as exc:  # noqa: BLE001 - a damaged cache is only a slower start
                log.warning("config_cache_ignored", path=str(path), why=type(exc).__name__)
                return
            size = os.fstat(file.fileno()).st_size
        if not (isinstance(whole, tuple) and len(whole) == 4 and whole[0] == _code_digest()):
            return  # another version's
        _, context, jobs, cache_id = whole
        if context != self._context:
            return
        appended, whole_records = _read_records(state_dir / DELTA_FILE, cache_id, jobs)
        self._jobs, self._saved = jobs, (context, jobs)
        self._on_disk = _OnDisk(cache_id, context, size, appended)
        if not whole_records:  # a save killed halfway: what follows it would not be read
            self._on_disk, self.unsaved = None, True


@dataclass(frozen=True, slots=True)
class _OnDisk:
    """What the cache files hold now."""

    cache_id: bytes
    context: bytes
    size: int  # of the full write
    appended: int  # bytes of records since


def _read_records(path: Path, cache_id: bytes, jobs: dict[str, JobSpec]) -> tuple[int, bool]:
    """Apply to ``jobs`` the records appended since the full write ``cache_id``; (their bytes,
    whether every record read whole)."""
    with _private(path) as file:
        if file is None:  # none, or not ours: written whole again
            return 0, not os.path.lexists(path)
        size = os.fstat(file.fileno()).st_size
        while file.tell() < size:
            try:
                record_id, validated = pickle.load(file)  # our own 0600 file (_private)
            except Exception:  # noqa: BLE001 - cut short by a crash: the rest is rewritten
                return size, False
            if record_id == cache_id:
                jobs.update(validated)
        return size, True


@contextlib.contextmanager
def _private(path: Path) -> Iterator[BinaryIO | None]:
    """``path`` opened for reading if it is a file this user wrote and nobody else could have
    (unpickling runs code); None when it is missing or not."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        yield None
        return
    with os.fdopen(fd, "rb") as file:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            log.warning("config_cache_ignored", path=str(path), why="not private to us")
            yield None
        else:
            yield file


def _validate(
    block: str,
    config: Config,
    environ: Mapping[str, str],
    first_fire: Callable[[JobSpec], object] | None,
) -> JobSpec | None:
    """One block parsed and validated alone, as the whole-file load would; None if anything
    about it is a problem (the whole-file load then reports it)."""
    try:
        source = yamlsource.parse(f"jobs:\n{block}", environ)
    except Exception:  # noqa: BLE001 - e.g. an alias whose anchor is in another block
        return None
    data = source.data
    if source.problems or not isinstance(data, dict) or len(data.get("jobs") or ()) != 1:
        return None
    [(name, body)] = data["jobs"].items()
    context = {"base": config.path.parent, "path": config.path}
    job, problems = job_from_file(name, body, config.defaults, config.timezone, context)
    if job is None or problems:
        return None
    own = {path[2:]: text for path, text in source.templates.items() if len(path) > 2}
    if own:
        job.with_templates(dump_places(own))
    if first_fire is not None:
        try:
            first_fire(job)
        except Exception:  # noqa: BLE001 - the whole-file load reports it at its line
            return None
    return job


def _block_key(block: str, environ: Mapping[str, str]) -> str:
    """The block itself (a dict hashes a string faster than any digest of it is made), and the
    values of the variables it names."""
    if "${" not in block:
        return block
    return "\0".join([block, *(f"{name}={environ.get(name)}" for name in _VAR_NAME.findall(block))])


def _context_digest(config: Config, environ: Mapping[str, str]) -> bytes:
    """What validating a job reads besides its text."""
    shared = [config.defaults, config.timezone, str(config.path), environ.get("HOME")]
    payload = json.dumps(shared, sort_keys=True, default=str)
    return hashlib.blake2b(payload.encode(), digest_size=16).digest()


_CODE: list[bytes] = []


def _code_digest() -> bytes:
    """This code, pydantic's and Python: a cache written by another version is not read."""
    if not _CODE:
        digest = hashlib.blake2b(f"{sys.version}\0{pydantic.VERSION}".encode(), digest_size=16)
        for module in sorted(Path(__file__).parent.glob("*.py")):
            digest.update(module.read_bytes())
        _CODE.append(digest.digest())
    return _CODE[0]
