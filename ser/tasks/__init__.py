"""Thin task functions, one per kind of run (as lightning-hydra-template's `train(cfg)`).

- `ser.tasks.rm.train_rm(cfg)`: an RM schedule (seed_only, ser, full_data) in its run dir.
- `ser.tasks.policy.train_policy(cfg)`: a policy schedule (ser_ppo, ser_dpo, ...) on the RM task's artifact.
- `ser.tasks.run.run_experiment(cfg)`: whichever of the two `schedule.name` asks for (what run.py calls).
"""
