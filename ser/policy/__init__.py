"""The policy stage: SFT, PPO and DPO against the evolved reward model (ser.policy.stage runs it)."""
