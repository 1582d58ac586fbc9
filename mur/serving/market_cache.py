"""The market-data cache: the latest closed hourly candles per pair (closed at market "now", :mod:`mur.clock`),
refreshed in the background."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from mur.clock import MarketClock, market_clock
from mur.errors import MarketDataError, MurError
from mur.model.inference import FEATURE_NAMES, window_from_candles
from mur.pairs import normalize_pair
from mur.timeutil import HOUR, iso

if TYPE_CHECKING:
    import pandas as pd

    from mur.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CandleSnapshot:
    """The latest closed candles of one pair at one refresh, with the model windows derived from them."""

    pair: str
    candles: pd.DataFrame
    as_of: datetime
    _windows: dict[tuple[int, tuple[str, ...]], np.ndarray] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def last_close(self) -> float:
        return float(self.candles["close"].iloc[-1])

    @property
    def candle_time(self) -> datetime:
        """Open time of the most recent closed candle."""
        return self.candles["timestamp"].iloc[-1].to_pydatetime()

    def window(self, seq_len: int, features: Sequence[str] | None = None) -> np.ndarray:
        """The ``(seq_len, n_features)`` float32 input for the latest ``seq_len`` candles with a model's
        ``features`` (default: the standard set); computed once per size and feature list."""
        key = (seq_len, tuple(features) if features else ())
        cached = self._windows.get(key)
        if cached is None:
            cached = self._windows[key] = window_from_candles(
                self.candles, seq_len, features or FEATURE_NAMES
            )
        return cached


class MarketCache:
    """Latest closed hourly candles per pair, refreshed in the background (no fetch per request).

    The source follows ``settings.data.market_data`` (bundled or Binance). "Now" comes from
    the market clock (:mod:`mur.clock`): only candles closed at market "now" are fetched; a replayed pair
    whose recorded history ended stays at its last candle. A failed refresh keeps the previous snapshot and records the error.
    """

    def __init__(
        self,
        settings: Settings,
        pairs: Iterable[str],
        *,
        source: Any = None,
        clock: MarketClock | None = None,
        history_hours: int | None = None,
    ) -> None:
        self.settings = settings
        self.pairs = [normalize_pair(p) for p in pairs]
        self._source = source
        self.clock = clock or market_clock(settings)
        # by default what ensure() would widen to for a model of these settings (its window and a day, twice):
        # a load that widens refetches every pair inside it, while Serve loads one model at a time per replica
        self.history_hours = max(int(history_hours or 2 * (settings.model.context_len + 24)), 2)
        self._snapshots: dict[str, CandleSnapshot] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def source(self) -> Any:
        if self._source is None:
            from mur.data import get_market_data

            self._source = get_market_data(self.settings)
        return self._source

    def _window_end(self, pair: str) -> datetime:
        """Exclusive upper bound on open times of closed candles."""
        end = self.clock.hour()
        if self.settings.data.market_data == "bundled":
            from mur.data.candles import as_utc

            end = min(end, as_utc(self.source.data_range(pair)[1]).to_pydatetime() + HOUR)
        return end

    def fetch(self, pair: str) -> CandleSnapshot:
        """Fetch the latest closed candles of ``pair`` now (blocking) and return a snapshot."""
        from mur.data import regularize_hourly, validate_candles

        end = self._window_end(pair)
        start = end - timedelta(hours=self.history_hours + 24)
        candles = self.source.klines(pair, start=start, end=end)
        validate_candles(candles, min_rows=1)
        candles, _ = regularize_hourly(candles.reset_index(drop=True), label=f"{pair} cache")
        return CandleSnapshot(pair, candles.iloc[-self.history_hours :].reset_index(drop=True), as_of=end)

    def ensure(self, pair: str, min_history: int = 0) -> None:
        """Cache ``pair`` from now on (fetched at once when new), keeping at least ``min_history`` candles
        (a model with a longer window than cached widens the history for every pair, then refetches)."""
        pair = normalize_pair(pair)
        with self._lock:
            new = pair not in self.pairs
            if new:
                self.pairs = [*self.pairs, pair]
            wider = min_history > self.history_hours
            if wider:
                self.history_hours = 2 * int(min_history)
        if wider:
            self.refresh(force=True)
        elif new:
            self.refresh([pair])

    def _current(self, pair: str) -> bool:
        """Whether ``pair``'s snapshot already holds every closed candle up to now (nothing new can arrive:
        the window end has not moved and its last candle is there), so a refresh can skip it."""
        snap = self._snapshots.get(pair)
        if snap is None or len(snap.candles) < self.history_hours:
            return False
        end = self._window_end(pair)
        return snap.as_of == end and snap.candle_time == end - HOUR

    def refresh(self, pairs: Iterable[str] | None = None, *, force: bool = False) -> dict[str, str]:
        """Refresh every pair (or ``pairs``) in one pass, skipping the ones with nothing new unless ``force``;
        returns ``{pair: error}`` for the ones that failed."""
        errors: dict[str, str] = {}
        pairs = list(self.pairs) if pairs is None else list(pairs)
        for pair in pairs:
            try:
                if not force and self._current(pair):
                    continue
                snapshot = self.fetch(pair)
            except (MurError, OSError, ValueError, KeyError) as exc:
                errors[pair] = f"{type(exc).__name__}: {exc}"
                log.warning("market cache: refreshing %s failed: %s", pair, exc)
                continue
            with self._lock:
                self._snapshots[pair] = snapshot
        with self._lock:
            for pair in pairs:
                self._errors.pop(pair, None)
            self._errors.update(errors)
        return errors

    def snapshot(self, pair: str) -> CandleSnapshot:
        """The latest snapshot of ``pair``; MarketDataError when none could be fetched yet."""
        snap = self._snapshots.get(pair)
        if snap is None:
            reason = self._errors.get(pair, "not fetched yet")
            raise MarketDataError(f"no market data for {pair} yet ({reason})")
        return snap

    def status(self, pair: str) -> dict[str, Any]:
        """``pair``'s last candle time and refresh error, for /readyz."""
        with self._lock:
            snap = self._snapshots.get(pair)
            return {"candle_time": iso(snap.candle_time) if snap else None, "error": self._errors.get(pair)}

    def start(self, interval_s: float, pairs: Iterable[str] = ()) -> None:
        """Cache ``pairs`` too; refresh now, then every ``interval_s`` seconds on a daemon thread (at most a
        sixth of a market hour: with a fast market clock new candles close every ``3600 / speed`` seconds)."""
        interval_s = min(interval_s, self.clock.seconds_per_hour / 6)
        self.pairs = list(dict.fromkeys([*self.pairs, *map(normalize_pair, pairs)]))  # new ones last, once
        if self._thread is not None:
            self.refresh([p for p in self.pairs if p not in self._snapshots])
            return
        self.refresh()

        def loop() -> None:
            while True:
                time.sleep(max(interval_s, 0.1))
                try:
                    self.refresh()
                except Exception:  # never let the refresher die
                    log.exception("market cache refresh crashed")

        self._thread = threading.Thread(target=loop, name="market-cache", daemon=True)
        self._thread.start()


_SHARED: dict[tuple[Any, ...], MarketCache] = {}
_SHARED_LOCK = threading.Lock()


def shared_market_cache(settings: Settings) -> MarketCache:
    """The one cache of this process for every pair (created empty; pairs join with ``ensure``/``start``).

    A Serve replica holding the models of many pairs refreshes all of their candles in one background pass
    instead of one cache (and thread) per pair; keyed on the settings that decide what it fetches.
    """
    key = (
        settings.data.market_data,
        str(settings.data.binance_api_url),
        repr(settings.clock.clock_start),
        settings.clock.clock_origin,
        float(settings.clock.clock_speed),
        settings.data.synthetic_pairs,
    )
    with _SHARED_LOCK:
        cache = _SHARED.get(key)
        if cache is None:
            cache = _SHARED[key] = MarketCache(settings, [])
        return cache
