"""``mur tune PAIR``: a thin wrapper over :func:`mur.training.tune.tune_pair` (docs/tuning.md)."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any, Literal

import typer

commands = typer.Typer()  # tune: mur.cli adds it to the root


def print_report(report: Any) -> None:
    """The trials (best first) and the confirmation-span comparison, gain and standard error per horizon."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from mur.training.tuning import verdict

    console = Console(width=max(140, Console().width))
    trials = Table(
        title=escape(f"{report.pair}: {len(report.trials)} trials, search {report.search_id}"),
        caption="score = mean over folds and horizons of (Winkler, pinball) / naive baseline's (lower is better)",
    )
    for col in ("trial", "status", "folds"):
        trials.add_column(col, justify="left" if col != "folds" else "right")
    for col in ("score", "Winkler / naive", "pinball / naive", "coverage"):
        trials.add_column(col, justify="right")
    trials.add_column("config")
    for t in report.trials:
        scores = ["-"] * 4  # a trial without a finished fold has none
        if t.folds:
            means = [
                sum(f[k] for f in t.folds) / len(t.folds)
                for k in ("winkler_ratio", "pinball_ratio", "coverage")
            ]
            scores = [f"{t.score:.4f}", f"{means[0]:.4f}", f"{means[1]:.4f}", f"{means[2]:.3f}"]
        config = escape(json.dumps(t.config, default=str))
        trials.add_row(escape(t.trial_id), t.status, str(len(t.folds)), *scores, config)
    console.print(trials)
    c = report.comparison
    table = Table(
        title=escape(
            f"Confirmation span {c['span']['start']} .. {c['span']['end']}, never seen by the search ({c['n']} "
            "forecasts with every target inside): tuned vs default, each trained once on the candles before it"
        ),
        caption="gain = 1 - loss_tuned / loss_default (> 0: tuned better), ± 1 HAC standard error",
    )
    table.add_column("horizon", justify="right")
    for loss in ("Winkler", "pinball"):
        for col in (f"{loss} default", f"{loss} tuned", "gain ± s.e."):
            table.add_column(col, justify="right")

    def gain(g: dict) -> str:
        return f"{g['gain']:+.4f}" + ("" if g["se"] is None else f" ± {g['se']:.4f}")

    def cells(g: dict) -> list[str]:  # one loss on one horizon: default, tuned, gain
        return [f"{g['default']:.5g}", f"{g['chosen']:.5g}", gain(g)]

    for h in c["horizons"]:
        table.add_row(f"{h['hours']} h", *cells(h["winkler"]), *cells(h["pinball"]))
    table.add_row(
        "all (each horizon / default's mean)",
        "1",
        f"{c['winkler']['chosen']:.4f}",
        gain(c["winkler"]),
        "1",
        f"{c['pinball']['chosen']:.4f}",
        gain(c["pinball"]),
        style="bold",
    )
    console.print(table)
    naive = c["vs_naive"]
    console.print(
        f"vs the naive interval baseline on the same span: Winkler ratio default {naive['default']['winkler_ratio']:.4f}, "
        f"tuned {naive['chosen']['winkler_ratio']:.4f}; coverage default {naive['default']['coverage']:.3f}, "
        f"tuned {naive['chosen']['coverage']:.3f}"
    )
    epochs = c.get("best_epoch") or {}
    if epochs:
        console.print(
            "best epoch of each confirmation fit (-1: the data-fitted start was kept): "
            + ", ".join(f"{k} {v}" for k, v in epochs.items())
        )
    console.print(escape(f"verdict: {verdict(c)}"))
    console.print(escape(f"tuned configuration: {json.dumps(report.chosen, default=str)}"))


@commands.command()
def tune(
    pair: Annotated[str, typer.Argument(help="trading pair, e.g. btc_usdt")],
    trials: Annotated[
        int | None, typer.Option(help="configurations to try (default MUR_TUNE_TRIALS)")
    ] = None,
    folds: Annotated[int | None, typer.Option(help="walk-forward folds per trial (MUR_TUNE_FOLDS)")] = None,
    fold_hours: Annotated[
        int | None, typer.Option(help="hours scored per fold (MUR_TUNE_FOLD_HOURS)")
    ] = None,
    confirm_hours: Annotated[
        int | None, typer.Option(help="the data's last hours, never searched (MUR_TUNE_CONFIRM_HOURS)")
    ] = None,
    train_days: Annotated[
        int | None, typer.Option(help="each fold's training window (MUR_TUNE_TRAIN_DAYS)")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="max epochs of each fold's fit (MUR_TUNE_EPOCHS)")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="trials at once, 1 CPU each (MUR_TUNE_CONCURRENCY)")
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(help="join this Ray cluster (e.g. auto) instead of starting a private local Ray"),
    ] = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="discard an unfinished search instead of resuming it")
    ] = False,
    activate: Annotated[
        Literal["auto", "always", "never"],
        typer.Option(help="auto (when it beat the default on the confirmation span), always or never"),
    ] = "auto",
    mlflow: Annotated[
        bool, typer.Option(help="log the parent run and one child run per trial to MLflow")
    ] = True,
    store: Annotated[bool, typer.Option(help="store the configuration as the pair's next version")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Hyper-parameter search with Ray Tune (ASHA over walk-forward folds), then the chosen configuration
    against the default on a confirmation span the search never saw; stored as the pair's next model
    configuration version, which scheduled training uses."""
    from mur.settings import get_settings
    from mur.training.tune import TuneBudget, private_ray_env, tune_pair
    from mur.training.tuning import verdict

    if not ray_address:
        private_ray_env(os.environ)  # before Ray is imported: a private Ray on loopback, behind its own token
    settings = get_settings()
    budget = TuneBudget.from_settings(
        settings,
        trials=trials,
        folds=folds,
        fold_hours=fold_hours,
        confirm_hours=confirm_hours,
        train_days=train_days,
        epochs=epochs,
        concurrency=concurrency,
    )
    report = tune_pair(
        settings,
        pair,
        budget,
        ray_address=ray_address,
        fresh=fresh,
        activate=activate,
        mlflow=mlflow,
        store=store,
        emit=lambda line: typer.echo(line, err=True),
    )
    stored = report.stored
    if as_json:
        doc = {
            **report.summary(),
            "evidence": report.evidence(),
            "trial_results": [vars(t) for t in report.trials],
        }
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    print_report(report)
    typer.echo(
        f"search {report.seconds.get('search', 0):.0f} s, confirmation {report.seconds.get('confirmation', 0):.0f} s"
        + (f"; MLflow parent run {report.mlflow_run_id}" if report.mlflow_run_id else "")
    )
    if stored is not None:
        state = "ACTIVE: scheduled training uses it" if stored.active else "stored, not active"
        typer.echo(f"model configuration {stored.label}: {state} ({verdict(report.comparison)})")
