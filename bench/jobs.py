"""Job targets for benchmarks: as cheap as a job can be, so the scheduler is what is measured."""


async def noop() -> None:
    return None
