"""Evaluation: the answer parser shared with the rewards, batched generation, metrics and the generalization matrix."""

if __name__ != "med_r1.eval":
    raise ImportError("import med_r1.eval, not the top-level 'eval' folder (it installs as med_r1.eval)")
