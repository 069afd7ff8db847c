"""A job's schedule in words, for people: "At 09:00, Monday through Friday (America/Sao_Paulo)"."""

from __future__ import annotations

from cron_descriptor import CasingTypeEnum, ExpressionDescriptor, Options

from scheduler_daemon.specs import JobSpec
from scheduler_daemon.specs.cron import REBOOT
from scheduler_daemon.timing.schedules import format_seconds

_OPTIONS = Options()
_OPTIONS.use_24hour_time_format = True
_OPTIONS.casing_type = CasingTypeEnum.Sentence


def schedule_in_words(job: JobSpec) -> str:
    if job.cron is not None:
        if job.cron.strip().lower() == REBOOT:
            return "At every start of the daemon"
        try:
            text = ExpressionDescriptor(job.cron, _OPTIONS).get_description()
        except Exception:  # noqa: BLE001 - words are a nicety; the expression itself is valid
            text = f"cron {job.cron}"
        return f"{text} ({job.timezone})"
    if job.every is not None:
        text = f"Every {format_seconds(job.every)}"
        return text + (f", offset {format_seconds(job.offset)}" if job.offset else "")
    assert job.at is not None
    return f"Once, at {job.at.isoformat()}"
