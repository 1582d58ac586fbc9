"""The typed arguments of the Serve application builder (also the ``args:`` block of config.yaml)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field

from mur.orchestration.job_submission import SECRET_FIELDS
from mur.pairs import normalize_pair
from mur.settings import Settings


class AppArgs(BaseModel):
    """What ``build_app`` needs; everything else comes from :class:`~mur.settings.Settings`."""

    pairs: list[Annotated[str, AfterValidator(normalize_pair)]] | None = Field(
        default=None, description="serve only these pairs (None: every registered pair with a champion)"
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings overrides applied on top of the replicas' MUR_* environment",
    )
    generation: int = Field(default=0, ge=0, description="set by `mur serve --force` to rebuild the app")

    def app_settings(self) -> Settings:
        """The Settings every deployment of this app runs with."""
        return Settings(**self.settings)


def settings_overrides(settings: Settings) -> dict[str, Any]:
    """The fields of ``settings`` that differ from the defaults, JSON-ready, secrets left out (as from a Ray
    job's payload: they would show in the Serve config; replicas read them from MUR_*)."""
    data = settings.flat(mode="json", exclude_defaults=True)
    return {k: v for k, v in data.items() if k not in SECRET_FIELDS}
