"""Loggers as configs name them (`conf/logger/`)."""

from __future__ import annotations

from typing import Any

from pytorch_lightning.loggers import WandbLogger as _LightningWandbLogger


class WandbLogger(_LightningWandbLogger):
    """Lightning's WandbLogger, minus the `anonymous=None` it always passes to `wandb.init`: wandb >= 0.19
    answers any value there with a deprecation line on the console, though the setting does nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
