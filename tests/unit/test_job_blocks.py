"""Loading job by job: the same config as the whole-file load, unchanged jobs reused, and every
problem still reported by the whole-file load."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from scheduler_daemon.errors import ConfigError
from scheduler_daemon.operation.reload import first_fire
from scheduler_daemon.specs import Config, job_blocks, load_config
from scheduler_daemon.specs.job_blocks import CACHE_FILE, DELTA_FILE, JobBlocks, split

# Every kind of job, comments and blank lines between them, a quoted name, a block scalar, a
# template, and defaults a job overrides in part.
CONFIG = """\
# header comment
state_dir: ./state
timezone: Europe/Paris
defaults:
  timeout: 30s
  retry: {attempts: 3}
jobs:
  # a comment before the first job
  prices:
    cron: "*/5 * * * *"
    http:
      url: https://example.test/prices
      headers: {Authorization: "Bearer ${TOKEN}"}
    retry: {attempts: 5}

  "nightly.report":
    cron: "0 3 * * *"
    command: ["sh", "-c", "echo report"]
  # between jobs
  script:
    every: 1h
    command:
      - sh
      - -c
      - |
        echo one
        echo two
  sleepy: {every: 10m, python: "asyncio:sleep", args: {delay: 0}}
  once: {at: "2030-01-01T00:00:00Z", command: ["true"]}
max_concurrency: 8
"""

ENV = {"TOKEN": "s3cr3t-token-value", "HOME": "/home/someone"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def dump(config: Config) -> list[object]:
    return [config.model_dump(), [(j.spec_hash(), j._templates) for j in config.jobs]]


def load(path: Path, blocks: JobBlocks | None, environ: dict[str, str] = ENV) -> Config:
    return load_config(path, environ=environ, first_fire=first_fire, blocks=blocks)


def test_job_by_job_gives_the_same_config_as_the_whole_file(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG)
    whole = load(path, None)
    blocks = JobBlocks()
    first = load(path, blocks)  # every job new: the whole file, then kept by block
    again = load(path, blocks)
    assert (blocks.reused, blocks.validated) == (5, 0)
    assert dump(first) == dump(again) == dump(whole)
    assert again.path == whole.path and again.jobs[0]._templates is not None


def test_only_the_changed_job_is_validated_again_and_the_others_are_kept(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG)
    blocks = JobBlocks()
    before = load(path, blocks)
    path.write_text(CONFIG.replace('cron: "0 3 * * *"', 'cron: "0 4 * * *"'))
    after = load(path, blocks)
    assert (blocks.reused, blocks.validated) == (4, 1)
    assert [a is b for a, b in zip(before.jobs, after.jobs, strict=True)] == [
        True, False, True, True, True,
    ]  # fmt: skip
    assert after.job("nightly.report").cron == "0 4 * * *"  # type: ignore[union-attr]
    assert dump(after) == dump(load(path, None))


def test_a_job_validated_alone_reads_as_in_the_whole_file_wherever_it_moves(
    tmp_path: Path,
) -> None:
    """A block ends with its last line's newline, which a literal scalar's value keeps; a job
    moved last, or away from last, is still its unchanged block."""
    path = write(tmp_path, CONFIG)
    blocks = JobBlocks()
    load(path, blocks)
    path.write_text(CONFIG.replace("echo two", "echo three"))
    changed = load(path, blocks)
    assert (blocks.reused, blocks.validated) == (4, 1)
    script = changed.job("script")
    assert script is not None and script.command == ("sh", "-c", "echo one\necho three\n")
    assert dump(changed) == dump(load(path, None))
    moved = CONFIG.replace("max_concurrency: 8\n", "").replace("echo two", "echo three")
    path.write_text(moved + '  added: {every: 1h, command: ["true"]}\n')
    load(path, blocks)
    assert (blocks.reused, blocks.validated) == (5, 1)  # `once`, last no more, is reused


def test_a_change_of_defaults_or_of_a_variable_reaches_the_jobs_it_touches(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG)
    blocks = JobBlocks()
    load(path, blocks)
    changed = load(path, blocks, {**ENV, "TOKEN": "another"})
    assert (blocks.reused, blocks.validated) == (4, 1)
    assert changed.jobs[0].http.headers["Authorization"] == "Bearer another"  # type: ignore[union-attr]
    path.write_text(CONFIG.replace("timeout: 30s", "timeout: 40s"))
    longer = load(path, blocks)
    assert {job.timeout for job in longer.jobs} == {40.0}
    assert dump(longer) == dump(load(path, None))


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ('    cron: "0 3 * * *"\n', "config.yaml:17: jobs.nightly.report.cron: expected"),
        ("  sleepy: {every: 10m,", "config.yaml:28: jobs.sleepy.every: expected"),
    ],
)
def test_a_problem_in_a_job_is_reported_as_by_the_whole_file_load(
    tmp_path: Path, bad: str, problem: str
) -> None:
    path = write(tmp_path, CONFIG)
    blocks = JobBlocks()
    load(path, blocks)
    replacement = (
        '    cron: "0 3 * * * * *"\n' if bad.startswith("    cron") else "  sleepy: {every: 10x,"
    )
    path.write_text(CONFIG.replace(bad, replacement))
    with pytest.raises(ConfigError) as by_blocks:
        load(path, blocks)
    with pytest.raises(ConfigError) as whole:
        load(path, None)
    assert by_blocks.value.problems == whole.value.problems
    assert any(p.startswith(f"{path.parent}/{problem}") for p in whole.value.problems), (
        whole.value.problems
    )


def test_two_jobs_of_one_name_are_refused_as_by_the_whole_file_load(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG)
    blocks = JobBlocks()
    load(path, blocks)
    path.write_text(CONFIG.replace("  script:\n", "  prices:\n"))
    with pytest.raises(ConfigError, match="duplicate"):
        load(path, blocks)


def test_aliases_between_jobs_and_the_frame_load_as_the_whole_file(tmp_path: Path) -> None:
    text = (
        'jobs:\n  a: &common {every: 1h, timeout: 5s, command: ["true"]}\n'
        '  b: {<<: *common, command: ["false"]}\n'
    )
    path = write(tmp_path, text)
    blocks = JobBlocks()
    assert dump(load(path, blocks)) == dump(load(path, None))
    assert [job.timeout for job in load(path, blocks).jobs] == [5.0, 5.0]


@pytest.mark.parametrize(
    "text",
    [
        'jobs: {a: {every: 1h, command: ["true"]}}\n',  # flow style
        'jobs:\n  a: {every: 1h, command: ["true"]}\n jobs2: 1\n',  # indentation goes back
        "jobs:\n  - a\n",  # a list
        'jobs:\n  &anchor a: {every: 1h, command: ["true"]}\n',
        '---\njobs:\n  a: {every: 1h, command: ["true"]}\n',  # a document marker
        "state_dir: x\n",  # no jobs
    ],
)
def test_what_cannot_be_cut_safely_is_not_cut(text: str) -> None:
    assert split(text) is None


def test_split_keeps_every_line_of_a_job_and_the_frame_around_the_jobs() -> None:
    cut = split(CONFIG)
    assert cut is not None
    frame, blocks = cut
    assert [block.split(":")[0].strip() for block in blocks] == [
        "prices", '"nightly.report"', "script", "sleepy", "once",
    ]  # fmt: skip
    assert "        echo two" in blocks[2] and "# between jobs" in blocks[1]
    assert frame.endswith("jobs: {}\nmax_concurrency: 8\n") and "prices" not in frame


# CONFIG and 20 more jobs: a save that validated one job appends it (with a quarter of the jobs
# new, the cache is written whole).
MANY = CONFIG.replace(
    "max_concurrency: 8\n",
    "".join(f'  extra{i}: {{every: 1h, command: ["true"]}}\n' for i in range(20))
    + "max_concurrency: 8\n",
)


def saved_once(tmp_path: Path, text: str = CONFIG) -> tuple[Path, Config, Path]:
    """The config file, what it loaded to, and the cache a first daemon saved for it."""
    path = write(tmp_path, text)
    blocks = JobBlocks()
    config = load(path, blocks)
    config.state_dir.mkdir(mode=0o700)
    blocks.save(config.state_dir)
    return path, config, config.state_dir / CACHE_FILE


def test_the_next_start_reads_the_jobs_back_from_state_dir(tmp_path: Path) -> None:
    path, config, saved = saved_once(tmp_path)
    assert saved.stat().st_mode & 0o777 == 0o600
    assert ENV["TOKEN"].encode() not in saved.read_bytes()  # a job with ${...} is not kept
    restarted = JobBlocks()
    again = load(path, restarted)
    assert (restarted.reused, restarted.validated) == (4, 1)
    assert dump(again) == dump(config)
    assert not restarted.unsaved  # nothing new to write


def test_a_save_that_died_or_failed_leaves_no_partial_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, config, saved = saved_once(tmp_path)
    state = config.state_dir
    (state / f".{CACHE_FILE}.partial").write_bytes(b"a save killed halfway")
    blocks = JobBlocks()
    write(tmp_path, CONFIG.replace("every: 10m", "every: 20m"))
    load(path, blocks, environ={**ENV, "HOME": "/elsewhere"})  # another context: written whole
    blocks.save(state)  # the next save starts over
    assert sorted(p.name for p in state.iterdir()) == [CACHE_FILE]
    assert saved.stat().st_mode & 0o777 == 0o600

    def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(job_blocks.os, "replace", disk_full)
    blocks = JobBlocks()
    write(tmp_path, CONFIG.replace("every: 10m", "every: 30m"))
    load(path, blocks)
    with pytest.raises(OSError, match="No space"):
        blocks.save(state)
    assert sorted(p.name for p in state.iterdir()) == [CACHE_FILE]
    assert blocks.unsaved  # tried again at the next save


def test_a_reload_saves_what_changed_and_the_next_start_reads_it_back(tmp_path: Path) -> None:
    """Not every job again: pickling 100k of them held the GIL for seconds after each reload."""
    path, config, saved = saved_once(tmp_path, MANY)
    whole = saved.read_bytes()
    blocks = JobBlocks()
    load(path, blocks)
    write(tmp_path, MANY.replace("every: 10m", "every: 20m"))
    load(path, blocks)
    blocks.save(config.state_dir)
    delta = config.state_dir / DELTA_FILE
    assert saved.read_bytes() == whole and delta.stat().st_mode & 0o777 == 0o600
    assert 0 < delta.stat().st_size < len(whole) // 2
    restarted = JobBlocks()
    again = load(path, restarted)
    assert (restarted.reused, restarted.validated) == (24, 1)  # the ${TOKEN} job is never kept
    assert dump(again) == dump(load(path, None)) and not restarted.unsaved


def test_records_cut_short_or_of_another_full_write_are_not_applied(tmp_path: Path) -> None:
    path, config, _ = saved_once(tmp_path, MANY)
    delta = config.state_dir / DELTA_FILE
    blocks = JobBlocks()
    load(path, blocks)
    changed = MANY.replace("every: 10m", "every: 20m")
    write(tmp_path, changed)
    load(path, blocks)
    blocks.save(config.state_dir)
    record = delta.read_bytes()  # the changed job, validated with ENV's HOME
    delta.write_bytes(record[:-5])  # a save killed halfway
    cut = JobBlocks()
    load(path, cut)
    assert (cut.reused, cut.validated) == (23, 2) and cut.unsaved
    elsewhere = {**ENV, "HOME": "/elsewhere"}  # what validating a job reads: written whole
    write(tmp_path, MANY)
    load(path, cut, environ=elsewhere)
    cut.save(config.state_dir)
    assert not delta.exists()
    delta.write_bytes(record)  # a crash between a full write and the records' removal
    write(tmp_path, changed)
    later = JobBlocks()
    load(path, later, environ=elsewhere)
    assert (later.reused, later.validated) == (23, 2)  # the record was of another full write


def test_records_are_folded_into_a_full_write_once_they_weigh_a_quarter_of_it(
    tmp_path: Path,
) -> None:
    path, config, saved = saved_once(tmp_path, MANY)
    delta = config.state_dir / DELTA_FILE
    blocks = JobBlocks()
    sizes = []
    for minutes in range(11, 30):
        write(tmp_path, MANY.replace("every: 10m", f"every: {minutes}m"))
        load(path, blocks)
        blocks.save(config.state_dir)
        sizes.append(delta.stat().st_size if delta.exists() else 0)
        assert sizes[-1] < saved.stat().st_size // 2
    assert any(a > 0 and b == 0 for a, b in itertools.pairwise(sizes))  # folded
    assert sizes[-1] > 0 or sizes[-2] > 0  # and appended to again
    assert dump(load(path, JobBlocks())) == dump(load(path, None))


def test_a_cache_file_others_could_write_or_another_version_wrote_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _, saved = saved_once(tmp_path)
    os.chmod(saved, 0o620)
    restarted = JobBlocks()
    with capture_logs() as logs:
        load(path, restarted)
    assert restarted.reused == 0
    assert [e["why"] for e in logs if e["event"] == "config_cache_ignored"] == ["not private to us"]
    os.chmod(saved, 0o600)
    monkeypatch.setattr(job_blocks, "_CODE", [b"another version"])
    other = JobBlocks()
    load(path, other)
    assert other.reused == 0
    saved.write_bytes(b"not a pickle")
    with capture_logs() as logs:
        load(path, JobBlocks())
    assert [e["event"] for e in logs] == ["config_cache_ignored"]
