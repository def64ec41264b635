"""Evaluation: batched generation, metrics, `med-r1 eval` and `med-r1 compare` (the answer parser is med_r1.answers)."""

if __name__ != "med_r1.eval":
    raise ImportError("import med_r1.eval, not the top-level 'eval' folder (it installs as med_r1.eval)")
