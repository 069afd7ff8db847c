"""Reference data refreshed before the market opens (a stand-in: no network needed)."""

from __future__ import annotations


def refresh(exchange: str) -> dict[str, object]:
    """A plain function: runs in one of the jobs' threads. The return value is kept in `output`."""
    tickers = {"B3": ["PETR4", "VALE3", "ITUB4"]}.get(exchange, [])
    return {"exchange": exchange, "tickers": len(tickers)}
