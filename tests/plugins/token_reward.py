"""Reward plugins loaded by path in the tests."""


def token_set_share(completions, completion_ids=None, *, token_ids: list[int] | None = None, **kwargs):
    """The share of completion tokens that are in `token_ids`."""
    wanted = set(token_ids or [])
    return [sum(t in wanted for t in ids) / max(len(ids), 1) for ids in completion_ids]


def always_raises(completions, **kwargs):
    raise RuntimeError("deliberate failure")


def fails_on_red(completions, solution, **kwargs):
    """Raises for any batch holding a row whose answer is A (the 'red' rows of the test data)."""
    if "A" in solution:
        raise ValueError("cannot score answer A")
    return [0.5] * len(completions)


def share_or_die(
    completions,
    completion_ids=None,
    trainer_state=None,
    *,
    token_ids: list[int] | None = None,
    die_at_step: int | None = None,
    inf_at_steps: list[int] | None = None,
    **kwargs,
):
    """token_set_share, plus two ways to misbehave: SIGKILL the process, or score inf, at given global steps."""
    import os
    import signal

    step = trainer_state.global_step if trainer_state is not None else None  # None in the pre-training checks
    if step is not None and step == die_at_step:
        os.kill(os.getpid(), signal.SIGKILL)
    if inf_at_steps and step in inf_at_steps:
        return [float("inf")] * len(completions)
    return token_set_share(completions, completion_ids, token_ids=token_ids)


def rank_recorder(completions, *, log_dir: str = ".", fail_on_rank: int | None = None, **kwargs):
    """Records which process scored each batch; optionally raises on one rank (a crash on one process)."""
    import os

    rank = int(os.environ.get("RANK", "0"))
    with open(os.path.join(log_dir, f"rank-{rank}.txt"), "a") as f:
        f.write(f"{len(completions)}\n")
    if fail_on_rank is not None and rank == fail_on_rank and kwargs.get("trainer_state") is not None:
        raise RuntimeError(f"deliberate failure on rank {rank}")
    return [0.0] * len(completions)
