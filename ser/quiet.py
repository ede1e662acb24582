"""A quiet console: the run's own lines, progress bars and the loop table; libraries' notices only on request.

Lightning's device lines and tips, dataloader and logging-interval notices, deprecation warnings from
third-party code and weight-writing progress bars say nothing about the run. `verbose=true` (or
`hydra.verbose`, or a debug config) keeps them all.
"""

from __future__ import annotations

import logging
import warnings

LIBRARY_LOGGERS = ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "transformers",
                   "datasets", "huggingface_hub", "torch.distributed")
NOTICES = (
    r".*does not have many workers.*",
    r".*smaller than the logging interval.*",
    r".*LeafSpec.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*that has `shuffle=True`.*",
    r".*`training_step` returned `None`.*",
)


def quiet_libraries(verbose: bool = False) -> None:
    if verbose:
        return
    import os

    os.environ.setdefault("WANDB_SILENT", "true")  # wandb's banners and run summary; its files keep everything
    import pytorch_lightning  # noqa: F401  (it sets its loggers' levels on import: import first, then lower them)

    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in NOTICES:
        warnings.filterwarnings("ignore", message=pattern)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|torch|pytorch_lightning).*")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # "Writing model shards" and weight-loading bars
    except ImportError:
        pass


def wants_verbose(cfg) -> bool:
    from hydra.core.hydra_config import HydraConfig

    hydra_verbose = HydraConfig.initialized() and bool(HydraConfig.get().verbose)
    return bool(cfg.get("verbose", False)) or hydra_verbose
