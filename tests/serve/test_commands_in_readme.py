"""Every README command that needs no internet, run as a user types it in a shell, against a running stack.

Each line below is taken verbatim from README.md (the test checks it is there, so a changed README fails it
until the list follows) and run with bash, like a user's shell: the ``mur`` on PATH, no ``RAY_AUTH_TOKEN`` in
the environment (the CLI finds the stack's token itself), ``$API``, ``$TOKEN`` and ``$ADMIN_TOKEN`` set as the
README sets them. Each must exit 0 and print its telling line. The stack is the Serve tests' one
(``serve_stack``: a test stack, its own database and registry prefix; its pair stands for ``btc_usdt``); the
file sorts before test_multiplex.py, which replaces the session's app.
Not run here: training, tuning and backtests (their own tests), ``mur up``/``mur dash``/``mur data serve``
(long-running; tests/e2e), the Airflow commands (tests/dags, tests/integration), lines with placeholders.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from serve_helpers import ServeStack, wait_until

from mur.settings import PROJECT_ROOT

pytestmark = pytest.mark.timeout(900)

README = (PROJECT_ROOT / "README.md").read_text()
JSON_OK = r'^\{"(?!error)'  # a JSON object that is not an error body
COMMANDS: list[tuple[str, str]] = [  # (the README line, a pattern one line of its output matches)
    ("mur serve status", r"^\S+: RUNNING at http://127\.0\.0\.1:\d+ \(readyz: (ready|degraded)\)$"),
    ("mur ray token", r"^[0-9a-f]{64}$"),
    ("mur clock", r"market now"),
    ("mur users create alice --quota 500", r"^\S{12,}$"),  # the generated password, once
    ("TOKEN=$(mur tokens create alice)", r"^mur_\S+$"),
    ("mur tokens create alice --name ci --expires-in 90d", r"^mur_\S+$"),
    ("mur tokens list alice", r"\bci\b.*\bactive\b"),
    ('curl -s -H "Authorization: Bearer $TOKEN" $API/v1/pairs', JSON_OK),
    ('curl -s -H "Authorization: Bearer $TOKEN" $API/v1/models', JSON_OK),
    ('curl -s -H "Authorization: Bearer $TOKEN" $API/v1/forecast/btc_usdt', r'"target_time":'),
    ("MUR_API_TOKEN=$TOKEN mur forecast btc_usdt", r"90 % range"),
    ('curl -s -H "Authorization: Bearer $TOKEN" "$API/v1/track-record/btc_usdt?limit=50"', r'"resolved":'),
    (  # a report once mur_monitoring has run (not on this stack: no Airflow); until then the JSON says so
        'curl -s -H "Authorization: Bearer $TOKEN" $API/v1/monitoring/btc_usdt',
        r'^\{"pair":|"error":"not_found","message":"no monitoring report for \w+ yet',
    ),
    ('curl -s -H "Authorization: Bearer $TOKEN" $API/v1/models/btc_usdt/history', JSON_OK),
    (  # nothing was served then on this stack: the answer says so, as JSON
        'curl -s -H "Authorization: Bearer $TOKEN" "$API/v1/forecast/btc_usdt?as_of=2024-11-05T14:30:00Z"',
        r'"(source|error)":',
    ),
    ('curl -s -X POST -H "Authorization: Bearer $ADMIN_TOKEN" $API/v1/admin/reload', JSON_OK),
    ("curl -s $API/readyz", r'"status":"(ready|degraded)"'),
    ("curl -s $API/metrics", r"^# (HELP|TYPE) "),
    ("mur pairs list", r"btc_usdt"),
    ("mur alerts status", r"^Discord\s+(configured|not configured)"),
    (".venv/bin/mur data show btc_usdt --tail 5", r"close"),
]


def test_every_listed_command_is_in_the_readme() -> None:
    missing = [line for line, _ in COMMANDS if line not in README]
    assert missing == []


def test_readme_commands_work_on_a_running_stack(serve_stack: ServeStack) -> None:
    from serve_app.deploy import app_details

    # an earlier module's redeploy (a new pair) leaves the app DEPLOYING while the old replica drains
    wait_until(
        lambda: (app_details(serve_stack.settings) or {})["status"] == "RUNNING", 180, "the app RUNNING"
    )
    _admin_id, admin_token = serve_stack.make_user(admin=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "MUR_RAY_AUTH_TOKEN")}
    env.update(
        PATH=f"{PROJECT_ROOT / '.venv' / 'bin'}:{env['PATH']}",
        API=serve_stack.url,
        MUR_API_URL=serve_stack.url,
        ADMIN_TOKEN=admin_token,
        MUR_PG_DATABASE=serve_stack.settings.db.pg_database,
        MUR_REGISTRY_PREFIX=serve_stack.settings.registry.registry_prefix,
    )
    failures = []
    for line, expected in COMMANDS:
        command = line.replace("btc_usdt", serve_stack.pair) if "data show" not in line else line
        if command.startswith("TOKEN="):
            command += '; echo "$TOKEN"'
        done = subprocess.run(
            ["bash", "-c", command], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
        )
        if line.startswith("TOKEN="):
            env["TOKEN"] = done.stdout.strip()
        if done.returncode != 0 or not re.search(expected, done.stdout, re.MULTILINE):
            failures.append(f"{line}: exit {done.returncode}\n{done.stdout[-600:]}{done.stderr[-600:]}")
    assert failures == [], "\n\n".join(failures)
