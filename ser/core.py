"""Names every layer shares: the schedules and the config error. A leaf: it imports nothing of ser.

Keeping them here lets the config checks, the RM task and the policy task agree on schedule names
without importing one another.
"""

from __future__ import annotations

# RM schedules: the three columns of the paper's table, on identical splits for a given seed.
RM_SCHEDULES = ("seed_only", "ser", "full_data")
REFERENCE_SCHEDULES = ("seed_only", "full_data")  # train once, never self-label
# Policy schedules: an RM schedule first, then a policy trained on its final RM.
POLICY_SCHEDULES = {"ser_ppo": "ser", "seed_ppo": "seed_only", "full_ppo": "full_data", "ser_dpo": "ser"}
POLICY_ALGOS = {"ser_ppo": "ppo", "seed_ppo": "ppo", "full_ppo": "ppo", "ser_dpo": "dpo"}
# The RM and the policy evolve together: the policy's samples are the unlabeled pool (ser/evolve/coevolve.py).
COEVOLVE = "coevolve"
ALL_SCHEDULES = RM_SCHEDULES + tuple(POLICY_SCHEDULES) + (COEVOLVE,)


class ConfigError(ValueError):
    """A config value the framework refuses, named by its key."""


def config_error(key: str, message: str) -> ConfigError:
    return ConfigError(f"config '{key}': {message}")


def check(condition: bool, key: str, message: str) -> None:
    """Raise ConfigError naming `key` unless `condition` holds."""
    if not condition:
        raise config_error(key, message)
