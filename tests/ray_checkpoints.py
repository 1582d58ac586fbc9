"""When a Ray Train run has a checkpoint it can restart from (tests that kill a worker or a node mid-run).

A worker's checkpoint files reach the storage (``checkpoint_*/state.pt``) before Ray Train's controller has
registered the checkpoint (every rank's report of it collected); a worker group lost in between restarts
from scratch. The controller writes its checkpoint manager's snapshot to the run's storage directory each
time it registers one, so a test kills only once that snapshot names a latest checkpoint.
"""

from __future__ import annotations

import json

RAY_TRAIN_SNAPSHOT = "checkpoint_manager_snapshot.json"
"""The checkpoint manager's snapshot in a run's storage directory (Ray Train v2)."""


def registered_checkpoint(snapshot: str) -> bool:
    """Whether a checkpoint manager snapshot (its JSON text) names a registered latest checkpoint."""
    try:
        state = json.loads(snapshot)
    except ValueError:  # being written
        return False
    return isinstance(state, dict) and state.get("latest_checkpoint_result") is not None
