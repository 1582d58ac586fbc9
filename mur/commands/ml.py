"""``mur train`` and ``mur predict``: thin wrappers over :mod:`mur.pipeline` and :mod:`mur.jobs`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from mur.errors import ModelError

METRIC_LABELS = (("mae", "MAE"), ("rmse", "RMSE"), ("mape", "MAPE %"), ("directional_accuracy", "Dir. acc."))


def print_metrics_table(docs: list[dict], title: str = "Evaluation on the test span") -> None:
    """Print model vs persistence vs linear (one block per metrics document) and the skill verdict."""
    from rich.console import Console
    from rich.table import Table

    from mur.evaluate import verdict

    console = Console()
    for doc in docs:
        table = Table(
            title=f"{title}: {doc['pair']} · {doc['arch']} · {doc['normalization']} · "
            f"test {doc.get('test_window', {}).get('start', '?')} → {doc.get('test_window', {}).get('end', '?')}"
        )
        table.add_column("predictor")
        for _, label in METRIC_LABELS:
            table.add_column(label, justify="right")
        for name in ("model", "persistence", "linear"):
            m = doc[name]
            table.add_row(
                name,
                f"{m['mae']:.4f}",
                f"{m['rmse']:.4f}",
                f"{m['mape']:.4f}",
                f"{m['directional_accuracy']:.3f}",
            )
        console.print(table)
        color = "green" if doc["skill"] > 0 else "yellow"
        console.print(f"skill vs persistence: [bold {color}]{doc['skill']:+.4f}[/] — {verdict(doc['skill'])}")


def train(
    pair: Annotated[str, typer.Argument(help="trading pair, e.g. btc_usdt (or any NAME with --data)")],
    epochs: Annotated[int | None, typer.Option(help="max epochs (early stopping may end sooner)")] = None,
    arch: Annotated[str | None, typer.Option(help="lstm or gru")] = None,
    out: Annotated[Path, typer.Option(help="output directory for model.onnx and metrics.json")] = Path(
        "artifacts"
    ),
    data: Annotated[Path | None, typer.Option(help="train on your own candles CSV instead")] = None,
    end: Annotated[
        str | None, typer.Option(help="use only candles strictly before this ISO-8601 UTC time")
    ] = None,
    normalization: Annotated[str | None, typer.Option(help="relative (default) or reference")] = None,
    hidden_size: Annotated[int | None, typer.Option(help="recurrent hidden size")] = None,
    compare_normalizations: Annotated[
        bool, typer.Option("--compare-normalizations", help="train both normalizations on the same split")
    ] = False,
    ray: Annotated[
        bool, typer.Option("--ray", help="submit as a Ray job (Ray Train + MLflow registry)")
    ] = False,
    num_workers: Annotated[int | None, typer.Option(help="Ray Train workers (with --ray)")] = None,
    use_gpu: Annotated[bool, typer.Option("--use-gpu", help="train on GPUs (with --ray)")] = False,
) -> None:
    """Train one pair, export ONNX, and print the evaluation next to the naive baselines."""
    from mur.pipeline import parse_time
    from mur.settings import get_settings

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    if arch is not None and arch not in ("lstm", "gru"):
        raise typer.BadParameter("--arch must be lstm or gru")
    if normalization is not None and normalization not in ("relative", "reference"):
        raise typer.BadParameter("--normalization must be relative or reference")
    end_dt = parse_time(end)
    overrides = {"epochs": epochs, "arch": arch, "hidden_size": hidden_size}
    if ray:
        from mur.jobs import submit_training

        result = submit_training(
            settings,
            pair,
            end=end_dt,
            num_workers=num_workers,
            use_gpu=use_gpu,
            stream_logs=True,
            **overrides,
        )
        print_metrics_table([result["metrics"]], title="Ray job result")
        typer.echo(
            f"registered {result.get('model_name', 'mur-' + pair)} version {result['version']}: {result['alias']} ({result['reason']})"
        )
        return
    from mur.pipeline import train_local

    pair_key = pair.lower()
    modes = ["relative", "reference"] if compare_normalizations else [normalization]
    docs = []
    for mode in modes:
        target = out / mode if compare_normalizations else out
        typer.echo(f"training {pair_key} ({mode or settings.normalization}) → {target}", err=True)
        docs.append(
            train_local(
                settings, pair_key, target, end=end_dt, data_csv=data, normalization=mode, **overrides
            )
        )
    print_metrics_table(docs)
    if compare_normalizations:
        typer.echo(
            "\nside by side (test MAE): "
            + "  ".join(f"{d['normalization']}={d['model']['mae']:.4f}" for d in docs)
            + f"  persistence={docs[0]['persistence']['mae']:.4f}"
        )
    typer.echo(
        f"wrote {out}/model.onnx and {out}/metrics.json" if not compare_normalizations else f"wrote {out}/*/"
    )


def predict(
    pair: Annotated[str, typer.Argument(help="trading pair, e.g. btc_usdt")],
    model: Annotated[Path, typer.Option(help="path to a model.onnx exported by mur train")],
    at: Annotated[
        str | None, typer.Option(help="forecast the hour after the candles before this time")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="use your own candles CSV")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Print the next-hour close forecast from the latest candles before ``--at``."""
    from mur.export import load_session
    from mur.forecast import forecast_from_candles, model_seq_len
    from mur.pipeline import load_candles, parse_time
    from mur.settings import get_settings

    settings = get_settings()
    if not model.is_file():
        raise ModelError(f"model file not found: {model}")
    session = load_session(model)
    seq_len = model_seq_len(session)
    candles, _, _ = load_candles(
        settings,
        pair.lower(),
        end=parse_time(at),
        data_csv=data,
        train_days=max(2, seq_len // 24 + 2),
        min_rows=seq_len,
    )
    result = forecast_from_candles(session, candles.iloc[-seq_len:])
    result["pair"] = pair.lower()
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(
            f"{result['pair']}: last close {result['last_close']:.6g} at {result['candle_time']} → "
            f"forecast {result['forecast']:.6g} for {result['target_time']} ({result['change_pct']:+.3f} %)"
        )


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``predict`` to the root app."""
    app.command("train")(train)
    app.command("predict")(predict)
