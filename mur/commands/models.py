"""``mur models``: the champion's history and its rollback (docs/promotion.md, "History and rollback").

``mur models history PAIR`` lists every move of the pair's ``champion`` alias (the gate's, live promotions,
rollbacks) with market and wall time, actor, reason and scores; ``mur models rollback PAIR --reason TEXT``
moves it back to the version that was champion before (or ``--to VERSION``); ``mur models shadow PAIR VERSION``
serves a version in shadow; ``mur models verify [PAIR]`` checks the served versions' bytes against their
recorded SHA-256. Errors are one line.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mur.commands.db import _database, fmt_when, print_table
from mur.commands.pairs import ByOption, _actor
from mur.contracts import MAX_MOVES

models_app = typer.Typer(
    name="models",
    no_args_is_help=True,
    help="The champion alias: its history and rollback (docs/promotion.md).",
)
PairArgument = Annotated[str, typer.Argument(help="pair, e.g. btc_usdt")]


@models_app.command("history")
def history(
    pair: PairArgument,
    as_json: Annotated[bool, typer.Option("--json", help="print the moves as JSON")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=MAX_MOVES, help="the latest N moves")] = 20,
) -> None:
    """Every move of PAIR's champion alias, newest first: when, what, who, why and on which scores."""
    from rich.table import Table

    from mur.db.alias_history import list_moves

    with _database() as db:
        moves = list_moves(db, pair, limit=limit)
    if as_json:
        typer.echo(json.dumps([m.as_json() for m in moves], indent=2))
        return
    table = Table(title=f"{pair}: {len(moves)} champion move(s), newest first", caption="times: UTC")
    for column in ("market time", "wall time", "action", "version", "actor", "reason", "scores"):
        table.add_column(column)
    for m in moves:
        row = (fmt_when(m.market_time), fmt_when(m.wall_time), m.action, m.change, m.actor, m.reason or "-")
        table.add_row(*row, m.scores_text)
    print_table(table)


@models_app.command("rollback")
def rollback(
    pair: PairArgument,
    reason: Annotated[str, typer.Option("--reason", help="why (recorded with the move)", show_default=False)],
    to: Annotated[
        int | None, typer.Option("--to", min=1, help="this version (default: the champion before this one)")
    ] = None,
    by: ByOption = None,
) -> None:
    """Move PAIR's champion alias back (to the previous champion, or --to VERSION); Serve follows within one
    registry refresh."""
    from mur.registry.aliases import rollback as roll_back
    from mur.settings import get_settings

    settings = get_settings()
    move = roll_back(settings, pair, to=to, actor=_actor(by), reason=reason)
    typer.echo(
        f"{move.pair}: champion v{move.previous_version} -> v{move.version} (rollback); the API serves "
        f"v{move.version} within one registry refresh ({settings.serving.registry_poll_s:g} s)"
    )


@models_app.command("shadow")
def shadow(
    pair: PairArgument,
    version: Annotated[int, typer.Argument(min=1, help="the version to serve in shadow")],
    off: Annotated[bool, typer.Option("--off", help="stop serving it in shadow")] = False,
) -> None:
    """Serve PAIR's VERSION in shadow (or stop, --off): its forecasts are computed beside the champion's, never
    returned, scored live, and it is promoted with reason "live" when significantly better (docs/promotion.md)."""
    from mur.errors import InvalidInputError, NotFoundError, first_line
    from mur.registry.aliases import keep_shadows
    from mur.registry.names import CHAMPION, model_name
    from mur.serving.champions import registry_client
    from mur.settings import get_settings

    settings = get_settings()
    client, name = registry_client(settings), model_name(pair.lower(), settings.registry.registry_prefix)
    try:
        tags = dict(client.get_model_version(name, str(version)).tags or {})
        aliases = dict(client.get_registered_model(name).aliases or {})
    except Exception as exc:  # MlflowException: no such model or version, or no registry
        raise NotFoundError(f"{pair} v{version}: {first_line(exc, 200)}") from None
    if tags.get("kind") == "backfill" or str(aliases.get(CHAMPION)) == str(version):
        raise InvalidInputError(f"{pair} v{version} is a backfill or the champion: it cannot be a shadow")
    k = settings.registry.shadow_max_per_pair
    if off:
        kept = keep_shadows(client, name, keep=k, drop=version)
    else:
        kept = keep_shadows(client, name, keep=k, add=version)
    typer.echo(
        f"{pair}: in shadow now {', '.join(f'v{v}' for v in kept) or 'none'} (at most {k}, the newest)"
    )


@models_app.command("verify")
def verify(pair: Annotated[str | None, typer.Argument(help="one pair (default: every pair)")] = None) -> None:
    """Check the bytes of every served version (champion and shadows) against the SHA-256 recorded at its
    registration (mur/registry/checksums.py); exit 1 when one differs or cannot be read."""
    from mur.errors import ModelError
    from mur.registry.checksums import recorded
    from mur.registry.download import model_bytes
    from mur.serving.champions import champions, registry_client
    from mur.settings import get_settings

    settings = get_settings()
    found = champions(
        registry_client(settings),
        prefix=settings.registry.registry_prefix,
        experiment=settings.registry.mlflow_experiment,
        pairs=[pair] if pair else None,
    )
    bad = 0
    for name, summary in sorted(found.items()):
        for version in [int(summary["version"]), *summary.get("shadows", [])]:
            try:
                model_bytes(settings, name, version)
                state = (
                    "ok" if recorded(settings, name, version) else "no checksum recorded (registered before)"
                )
            except ModelError as exc:  # ChecksumError among them
                bad, state = bad + 1, f"REFUSED: {exc}"
            typer.echo(f"{name} v{version}: {state}")
    if not found:
        typer.echo(f"no champion {'of ' + pair if pair else 'registered'}")
    if bad:
        raise typer.Exit(1)
