"""Reward plugins that misbehave on purpose, for the table of user errors (tests/test_user_errors.py)."""


def steady(completions, **kwargs):
    """0.5 for every completion."""
    return [0.5] * len(completions)


def always_nan(completions, **kwargs):
    """NaN for every completion, before training and during it."""
    return [float("nan")] * len(completions)


def nan_in_training(completions, trainer_state=None, **kwargs):
    """Fine in the checks before training (no trainer_state), NaN for every completion once training runs."""
    return [0.5 if trainer_state is None else float("nan")] * len(completions)


def raises_from_step(completions, trainer_state=None, *, from_step: int | None = None, **kwargs):
    """Raises once training has done `from_step` optimizer steps (never when from_step is null)."""
    if trainer_state is not None and from_step is not None and trainer_state.global_step >= from_step:
        raise ValueError(f"cannot score at step {trainer_state.global_step + 1}")
    return [0.5] * len(completions)


def always_raises(completions, **kwargs):
    raise RuntimeError("deliberate failure")
