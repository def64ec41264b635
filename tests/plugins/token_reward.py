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
