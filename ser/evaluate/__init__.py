"""Evaluate policies on held-out prompts with a gold judge (an RM no policy trained against)."""
