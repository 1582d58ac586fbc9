"""What the benchmarks share: the bundled pairs on a frozen market clock, a local training on them, the options
and smoke mode of the benchmarks that train per pair, and writing a results file.

A benchmark run as a script imports it as ``benchmarks.common`` once the repository root is on ``sys.path``.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BUNDLED = ("btc_usdt", "eth_usdt", "sol_usdt", "bnb_usdt", "xrp_usdt")
CLOCK_AFTER_THE_DATA = datetime(2026, 1, 1, tzinfo=UTC)
"""The market clock, frozen after every bundled candle: the whole history is visible."""
RESULTS = Path(__file__).parent / "results"


def bundled_settings(**values: Any) -> Any:
    """Settings on the bundled candles, the market clock frozen after them (``values``: other settings)."""
    from mur.settings import Settings

    return Settings(market_data="bundled", clock_start=CLOCK_AFTER_THE_DATA, clock_speed=0, **values)


def train_locally(
    pair: str,
    epochs: int,
    train_days: int,
    end: datetime | None = None,
    out_dir: Path | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train ``pair`` locally (no registry) on ``train_days`` of bundled candles before ``end`` (default: all;
    ``model.onnx`` kept in ``out_dir`` when given) and return its metrics document as a dict (``overrides``:
    hyper-parameters, e.g. the smoke run's ``hidden_size``)."""
    from mur.training.driver import train_and_register
    from mur.training.loop import LocalFit

    result = train_and_register(
        bundled_settings(train_days=train_days),
        pair,
        fit=LocalFit(),
        end=end,
        out_dir=out_dir,
        register=False,
        epochs=epochs,
        emit=lambda _m: None,
        **overrides,
    )
    assert result.metrics is not None
    return result.metrics.model_dump(mode="json")


def training_parser(doc: str, pairs: tuple[str, ...], results: str, smoke: str) -> argparse.ArgumentParser:
    """The options of a benchmark that trains each of ``pairs``: ``--pairs``, ``--epochs``, ``--train-days``,
    ``--out`` (default ``benchmarks/results/<results>``, none in a smoke run) and ``--smoke`` (``smoke``: its
    help); ``doc``'s first paragraph describes it."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--pairs", nargs="+", default=list(pairs))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-days", type=int, default=365)
    parser.add_argument("--out", type=Path, help=f"default: benchmarks/results/{results} (smoke: none)")
    parser.add_argument("--smoke", action="store_true", help=smoke)
    parser.set_defaults(default_out=RESULTS / results)
    return parser


def parse_training_args(
    parser: argparse.ArgumentParser, **smoke: Any
) -> tuple[argparse.Namespace, dict[str, Any]]:
    """The options of :func:`training_parser` and the hyper-parameters they override. ``--smoke``: the first
    pair, one epoch of a 4-unit model on 45 days, and ``smoke``'s values for the benchmark's own options;
    otherwise ``--out`` defaults to the results file."""
    args = parser.parse_args()
    if not args.smoke:
        args.out = args.out or args.default_out
        return args, {}
    args.pairs, args.epochs, args.train_days = args.pairs[:1], 1, 45
    vars(args).update(smoke)
    return args, {"hidden_size": 4}


def write_json(path: Path | str, doc: Any, *, indent: int | None = 2, end: str = "") -> None:
    """Write ``doc`` to ``path`` as JSON (then ``end``), creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=indent) + end)
