"""``mur train`` and ``mur predict``: thin wrappers over :mod:`mur.training.driver` (the local fit) and
:mod:`mur.orchestration.job_submission` (the Ray job); both report a :class:`~mur.contracts.TrainingResult`."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from mur.contracts import PREDICTORS, HorizonMetrics, MetricsDocument, TrainingResult
from mur.errors import ModelError

commands = typer.Typer()  # train, predict, backtest: mur.cli adds them to the root

METRIC_LABELS = (
    ("mae", "MAE", ".4f"),
    ("rmse", "RMSE", ".4f"),
    ("mape", "MAPE %", ".4f"),
    ("directional_accuracy", "Dir. acc.", ".3f"),
)
HORIZON_COLUMNS: tuple[tuple[str, Callable[[Any], str]], ...] = (
    ("horizon", lambda h: f"{h.hours} h"),
    ("n", lambda h: str(h.n)),
    ("point skill", lambda h: f"{h.skill:+.4f}"),
    ("DM p(worse)", lambda h: f"{h.dm_p_worse:.3g}"),
    ("dir. acc.", lambda h: f"{h.model.directional_accuracy:.3f}"),
    ("coverage", lambda h: f"{h.interval.coverage:.3f}"),
    ("cov. (a)", lambda h: f"{h.naive.coverage:.3f}"),
    ("cov. (b)", lambda h: f"{h.ewma.coverage:.3f}"),
    ("cov. (c)", lambda h: "–" if h.garch is None else f"{h.garch.coverage:.3f}"),
    ("width %", lambda h: f"{100 * h.interval.width:.3f}"),
    ("Winkler", lambda h: f"{h.interval.winkler:.5g}"),
    ("int. skill vs (a)", lambda h: f"{h.interval_skill:+.4f}"),
    ("vs (b)", lambda h: f"{h.interval_skill_vs_ewma:+.4f}"),
    ("vs (c)", lambda h: "–" if h.interval_skill_vs_garch is None else f"{h.interval_skill_vs_garch:+.4f}"),
    ("pinball", lambda h: f"{h.interval.pinball:.5g}"),
)
"""The per-horizon table's columns: title, and the cell of one horizon's metrics."""
TABLE_WIDTH = 180  # the tables' width when piped (or wider than the terminal): the ranges' table fits it


def print_metrics_table(docs: list[MetricsDocument], title: str = "Evaluation on the test span") -> None:
    """Print model vs persistence vs linear (one block per metrics document) and the skill verdict."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from mur.evaluation.significance import verdict

    console = Console(width=max(TABLE_WIDTH, Console().width))
    for doc in docs:
        table = Table(
            title=escape(
                f"{title}: {doc.pair} · {doc.arch} · {doc.normalization} · "
                f"test {doc.test_window.start or '?'} → {doc.test_window.end or '?'}"
            )
        )
        table.add_column("predictor")
        for _, label, _ in METRIC_LABELS:
            table.add_column(label, justify="right")
        for name in PREDICTORS:
            m = getattr(doc, name)
            table.add_row(name, *(format(getattr(m, key), spec) for key, _, spec in METRIC_LABELS))
        console.print(table)
        sig = doc.significance  # the sentence says "beats" only when the Diebold-Mariano test does
        said = verdict(sig.dm_p_better, sig.dm_p_worse, doc.skill) if sig else "not tested (no DM record)"
        color = "green" if sig and sig.dm_p_better < 0.05 else "yellow"
        console.print(f"skill vs persistence: [bold {color}]{doc.skill:+.4f}[/] — {escape(said)}")
        if sig is not None:
            se = "?" if sig.skill_se is None else f"{sig.skill_se:.4f}"
            console.print(
                f"Diebold-Mariano (HLN) on {doc.n_test} h: p(model better)={sig.dm_p_better:.3g}, "
                f"p(model worse)={sig.dm_p_worse:.3g}; skill ± {se} (1 s.e.); direction "
                f"{sig.direction_hits}/{sig.direction_n} right, binomial p={sig.direction_p_value:.3g}"
            )
        if doc.horizons:
            console.print(horizon_table(doc.pair, doc.horizons))


def horizon_table(pair: str, horizons: Sequence[HorizonMetrics], scope: str = "forecasts per horizon") -> Any:
    """Per horizon: the median vs persistence, and the interval vs baselines (a) naive, (b) EWMA, (c) GARCH."""
    from rich.markup import escape
    from rich.table import Table

    level = horizons[0].interval_level if horizons else 0.9
    table = Table(
        title=f"{escape(pair)}: {escape(scope)}, {level:.0%} intervals · (a) naive quantiles · "
        "(b) EWMA volatility x hour of day · (c) GARCH(1,1)-t",
        caption="interval skill = 1 - Winkler_model / Winkler_baseline (> 0: better ranges); "
        "coverage should be near the nominal level",
    )
    for title, cell in HORIZON_COLUMNS:  # each column as wide as its widest figure: the header wraps instead
        table.add_column(title, justify="right", min_width=max((len(cell(h)) for h in horizons), default=0))
    for h in horizons:
        table.add_row(*(cell(h) for _, cell in HORIZON_COLUMNS))
    return table


def echo_registration(result: TrainingResult) -> None:
    """One line: the registered version and the promotion gate's decision."""
    reused = " (trained before for this window; reused)" if result.reused else ""
    typer.echo(
        f"registered {result.model_name} version {result.version}: {result.alias} ({result.reason}){reused}"
    )


@commands.command()
def train(
    pair: Annotated[str, typer.Argument(help="trading pair, e.g. btc_usdt (or any NAME with --data)")],
    epochs: Annotated[int | None, typer.Option(help="max epochs (early stopping may end sooner)")] = None,
    arch: Annotated[Literal["lstm", "gru"] | None, typer.Option(help="lstm or gru")] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="output directory for model.onnx and metrics.json (default ./artifacts); with --ray the job's "
            "artefacts are downloaded here and nothing is registered unless --register"
        ),
    ] = None,
    data: Annotated[Path | None, typer.Option(help="train on your own candles CSV instead")] = None,
    end: Annotated[
        str | None, typer.Option(help="use only candles strictly before this ISO-8601 UTC time")
    ] = None,
    train_days: Annotated[int | None, typer.Option(help="days to train on (MUR_TRAIN_DAYS)")] = None,
    normalization: Annotated[
        Literal["relative", "reference"] | None, typer.Option(help="relative (default) or reference")
    ] = None,
    hidden_size: Annotated[int | None, typer.Option(help="recurrent hidden size")] = None,
    horizons: Annotated[
        str | None, typer.Option(help="forecast horizons in hours, comma-separated, from 1 (default 1,4,24)")
    ] = None,
    quantile_levels: Annotated[
        str | None, typer.Option(help="quantile levels, comma-separated, with 0.5 (default 0.05,0.5,0.95)")
    ] = None,
    compare_normalizations: Annotated[
        bool, typer.Option("--compare-normalizations", help="train both normalizations on the same split")
    ] = False,
    register: Annotated[
        bool,
        typer.Option(
            "--register", help="also log the run to MLflow and register it (the gate picks the alias)"
        ),
    ] = False,
    ray: Annotated[
        bool, typer.Option("--ray", help="submit as a Ray job (Ray Train + MLflow registry)")
    ] = False,
    num_workers: Annotated[int | None, typer.Option(help="Ray Train workers (with --ray)")] = None,
    use_gpu: Annotated[bool, typer.Option("--use-gpu", help="train on GPUs (with --ray)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the training result(s) as JSON")] = False,
    tuned: Annotated[
        bool | None,
        typer.Option(
            "--tuned/--no-tuned",
            help="train with the pair's active tuned configuration (mur tune); default: when registering",
        ),
    ] = None,
) -> None:
    """Train one pair, export ONNX, and print the evaluation next to the naive baselines."""
    from mur.settings import check_option, get_settings
    from mur.timeutil import parse_time

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    check_option("epochs", "epochs", epochs)
    check_option("hidden-size", "hidden_size", hidden_size)
    check_option("num-workers", "num_workers", num_workers)
    check_option("train-days", "train_days", train_days)
    settings = settings if train_days is None else settings.replace(train_days=train_days)  # a Ray job too
    end_dt = parse_time(end)
    overrides: dict[str, Any] = {
        "epochs": epochs,
        "arch": arch,
        "hidden_size": hidden_size,
        "horizons": horizons,
        "quantile_levels": quantile_levels,
    }
    from mur.model.quantile_config import parse_horizons, parse_levels

    try:  # a clear one-line error before any training starts
        parse_horizons(horizons) if horizons else None
        parse_levels(quantile_levels) if quantile_levels else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if ray:
        if data is not None or compare_normalizations:
            raise typer.BadParameter("--data and --compare-normalizations train locally: drop --ray")
        if tuned is False:
            raise typer.BadParameter("a Ray job registers with the tuned configuration: drop --no-tuned")
        from mur.orchestration.job_submission import copy_artefacts, submit_training

        # a Ray job that registers the model; with --out it writes its artefacts under a fresh prefix instead (and
        # registers only with --register), which are downloaded into --out and deleted
        outputs = (
            None if out is None else f"s3://{settings.registry.s3_bucket}/job-outputs/{uuid.uuid4().hex}"
        )
        result = submit_training(
            settings,
            pair,
            end=end_dt,
            num_workers=num_workers,
            use_gpu=use_gpu,
            stream_logs=not as_json,
            out_uri=outputs,
            no_register=out is not None and not register,
            **overrides,
        )
        if out is not None and outputs is not None:
            copy_artefacts(settings, outputs, str(out.resolve()), move=True)
        if as_json:
            typer.echo(result.model_dump_json(indent=2))
            return
        if result.metrics is not None:
            print_metrics_table([result.metrics], title="Ray job result")
        if result.version is not None:
            echo_registration(result)
        if out is not None:
            typer.echo(f"wrote {out}/model.onnx and {out}/metrics.json")
        return
    out = out or Path("artifacts")
    from mur.training.driver import train_and_register
    from mur.training.loop import LocalFit

    pair_key = pair.lower()
    modes = ["relative", "reference"] if compare_normalizations else [normalization]
    results: list[TrainingResult] = []
    for mode in modes:
        target = out / mode if compare_normalizations and mode is not None else out
        typer.echo(f"training {pair_key} ({mode or settings.model.normalization}) → {target}", err=True)
        results.append(
            train_and_register(
                settings if mode is None else settings.replace(normalization=mode),
                pair_key,
                fit=LocalFit(progress=not as_json),
                end=end_dt,
                data_csv=data,
                out_dir=target,
                register=register,
                tuned=tuned,
                **overrides,
            )
        )
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in results], indent=2))
        return
    docs = [r.metrics for r in results if r.metrics is not None]
    print_metrics_table(docs)
    if compare_normalizations:
        typer.echo(
            "\nside by side (test MAE): "
            + "  ".join(f"{d.normalization}={d.model.mae:.4f}" for d in docs)
            + f"  persistence={docs[0].persistence.mae:.4f}"
        )
    for result in results if register else []:
        echo_registration(result)
    typer.echo(
        f"wrote {out}/model.onnx and {out}/metrics.json" if not compare_normalizations else f"wrote {out}/*/"
    )


@commands.command()
def predict(
    pair: Annotated[str, typer.Argument(help="trading pair, e.g. btc_usdt")],
    model: Annotated[Path, typer.Option(help="path to a model.onnx exported by mur train")],
    at: Annotated[
        str | None, typer.Option(help="forecast the hour after the candles before this time")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="use your own candles CSV")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Print the forecast from the latest candles before ``--at``: the next close, and every horizon's range."""
    from rich.console import Console

    from mur.commands.forecast import forecast_table
    from mur.errors import ConfigError
    from mur.model.export import load_session
    from mur.model.inference import forecast_from_candles, model_seq_len
    from mur.serving.contract import ForecastBody
    from mur.settings import get_settings
    from mur.timeutil import HOUR, iso, parse_time
    from mur.training.driver import load_candles

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
    if (when := parse_time(at)) is not None and (last := candles["timestamp"].iloc[-1]) < when - HOUR:
        raise ConfigError(  # it would silently answer for the last candle
            f"--at {at}: the candles end with the one opening at {iso(last)}; --at can be at most one hour "
            f"after it ({iso(last + HOUR)})"
        )
    result = forecast_from_candles(session, candles, pair=pair.lower())
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(
        f"{result['pair']}: last close {result['last_close']:.6g} at {result['candle_time']} → "
        f"forecast {result['forecast']:.6g} for {result['target_time']} ({result['change_pct']:+.3f} %)"
    )
    Console().print(forecast_table(ForecastBody.model_validate(result)))


@commands.command()
def backtest(
    pair: Annotated[str, typer.Argument(help="trading pair, e.g. btc_usdt (or any NAME with --data)")],
    folds: Annotated[int, typer.Option(help="number of successive origins (folds)")] = 4,
    end: Annotated[
        str | None,
        typer.Option(
            help="end of the last fold (ISO-8601 UTC; default: data end); its forecasts' targets at longer "
            "horizons may lie after it"
        ),
    ] = None,
    data: Annotated[Path | None, typer.Option(help="your own candles CSV instead of the market data")] = None,
    fold_hours: Annotated[int, typer.Option(help="hours scored after each origin")] = 168,
    window: Annotated[
        Literal["sliding", "expanding"],
        typer.Option(help="sliding (train_days before each origin) or expanding"),
    ] = "sliding",
    train_days: Annotated[int | None, typer.Option(help="sliding window length in days")] = None,
    epochs: Annotated[int | None, typer.Option(help="max epochs per fold")] = None,
    out: Annotated[Path, typer.Option(help="folder for backtest.json and backtest.png")] = Path("backtest"),
    mlflow: Annotated[bool, typer.Option(help="log to MLflow when the tracking server answers")] = True,
    strategy: Annotated[
        bool,
        typer.Option(
            help="also walk the sizing rule (MUR_STRATEGY_*) forward after fees, sized by the model's, the EWMA "
            "and the GARCH range, next to buy & hold (docs/decisions.md; paper, not advice)"
        ),
    ] = False,
) -> None:
    """Rolling-origin (walk-forward) evaluation: retrain at each origin, score the hours after it."""
    from datetime import timedelta

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from mur.evaluation import strategy as rule_walk
    from mur.evaluation.backtest import concat_forecasts, log_to_mlflow, run_backtest, write_outputs
    from mur.evaluation.sizing import SizingRule
    from mur.settings import check_option, get_settings
    from mur.timeutil import parse_time
    from mur.training.driver import load_candles

    settings = get_settings()
    check_option("train-days", "train_days", train_days)
    check_option("epochs", "epochs", epochs)
    if train_days is not None:
        settings = settings.replace(train_days=train_days)
    # all candles up to --end (and the longest horizon's targets after it): each fold's slices are cut from them
    end_dt = parse_time(end)
    reach = None if end_dt is None else end_dt + timedelta(hours=max(settings.model.horizons) - 1)
    candles, _, _ = load_candles(settings, pair.lower(), end=reach, data_csv=data, train_days=None)
    report = run_backtest(
        pair.lower(),
        candles,
        rule_walk.local_trainer(settings, pair, epochs),
        folds=folds,
        fold_hours=fold_hours,
        seq_len=settings.model.seq_len,
        window=window,
        train_days=settings.training.train_days,
        end=end_dt,
        progress=lambda msg: typer.echo(f"[backtest] {msg}", err=True),
    )
    table = Table(
        title=escape(
            f"Walk-forward evaluation: {report.pair} ({report.window} window, {fold_hours} h per fold)"
        )
    )
    columns: tuple[tuple[str, Callable[[Any], str]], ...] = (  # one row per fold; the pooled row follows
        ("fold", lambda f: str(f.fold)),
        ("origin", lambda f: escape(f.origin)),
        ("hours", lambda f: str(f.n)),
        ("MAE model", lambda f: f"{f.model['mae']:.6g}"),
        ("MAE persistence", lambda f: f"{f.persistence['mae']:.6g}"),
        ("skill", lambda f: f"{f.skill:+.4f}"),
        ("DM p(better)", lambda f: f"{f.evidence['dm_p_better']:.3g}"),
        ("dir. acc.", lambda f: f"{f.model['directional_accuracy']:.3f}"),
    )
    for title, _ in columns:
        table.add_column(title, justify="right")
    for f in report.folds:
        table.add_row(*(cell(f) for _, cell in columns))
    pooled = report.pooled
    table.add_row(
        "pooled",
        "",
        str(pooled["n"]),
        f"{pooled['mae_model']:.6g}",
        f"{pooled['mae_persistence']:.6g}",
        f"{pooled['skill']:+.4f}",
        f"{pooled['dm_p_better']:.3g}",
        f"{sum(f.model['directional_accuracy'] * f.n for f in report.folds) / pooled['n']:.3f}",  # as the folds
        style="bold",
    )
    console = Console(width=max(TABLE_WIDTH, Console().width))
    console.print(table)
    typer.echo(
        f"pooled: {pooled['verdict']}; Diebold-Mariano p-value (model better) {pooled['dm_p_better']:.4g}"
    )
    scope = f"walk-forward ranges pooled over {len(report.folds)} folds"
    console.print(
        horizon_table(report.pair, [HorizonMetrics.model_validate(h) for h in pooled["horizons"]], scope)
    )
    for line in pooled["range_verdicts"]:
        typer.echo(f"range {line}")
    if strategy:
        rule = SizingRule.from_settings(settings)
        doc, results = rule_walk.strategy_report(concat_forecasts(report.forecasts), rule)
        report.pooled["strategy"] = doc
        typer.echo(
            f"\nSizing rule ({doc['label']}), {doc['start']} .. {doc['end']}: {rule_walk.describe(rule)}"
        )
        typer.echo(rule_walk.table(doc) + "\n" + doc["verdict"])
    files: tuple[Path, ...] = write_outputs(report, out)
    typer.echo(f"wrote {files[0]} and {files[1]}")
    if strategy:
        files = (*files, out / "strategy.png")
        rule_walk.chart(results, files[-1], f"{report.pair}: the sizing rule walked forward")
        typer.echo(f"wrote {files[-1]}")
    if mlflow:
        from mur.registry.client import configure

        configure(settings, quiet=True)  # its MLflow account (MUR_MLFLOW_USERNAME/PASSWORD) for the run
        run_id = log_to_mlflow(
            report,
            files,
            tracking_uri=settings.registry.mlflow_tracking_uri,
            experiment=settings.registry.mlflow_experiment,
        )
        typer.echo(f"logged to MLflow run {run_id}" if run_id else "MLflow not reachable: not logged")
