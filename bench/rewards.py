"""Reward throughput: completions scored per second by each built-in reward.

    python bench/rewards.py [--n 20000]

Completions are a realistic mix (think + answer, answer only, multi-line tags, option text, untagged rambling,
repetitive loops), 60-200 tokens long like Med-R1's. Each reward scores them in batches of 64 (a GRPO step's size).
"""

from __future__ import annotations

import argparse
import random
import time

from med_r1.rewards import available

OPTIONS = ["CT", "MRI", "X-ray", "Ultrasound"]


def completions(n: int, seed: int = 0) -> tuple[list[str], list[list[int]]]:
    rng = random.Random(seed)
    words = "the image shows a hyperintense lesion in the left lobe consistent with findings of".split()
    shapes = [
        "<think>{t}</think><answer>{L}</answer>",
        "<think>{t}</think>\n<answer>\n{L}) {O}\n</answer>",
        "<answer>{O}</answer>",
        "I think the answer is {L} because {t}",
        "<think>{t} {t} {t}</think><answer>({l})</answer>",
    ]
    texts, ids = [], []
    for _ in range(n):
        thought = " ".join(rng.choice(words) for _ in range(rng.randint(40, 150)))
        index = rng.randrange(4)
        letter = "ABCD"[index]
        texts.append(rng.choice(shapes).format(t=thought, L=letter, l=letter.lower(), O=OPTIONS[index]))
        ids.append([rng.randrange(1000) for _ in range(len(texts[-1].split()))])
    return texts, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    texts, ids = completions(args.n)
    batch = args.batch
    columns = {
        "solution": ["B"] * batch,
        "options": [OPTIONS] * batch,
        "answer_type": ["choice"] * batch,
        "modality": ["CT"] * batch,
        "question_id": ["q"] * batch,
    }
    print(f"{'reward':<16} {'completions/s':>14}")
    for name, reward in available().items():
        start = time.perf_counter()
        for i in range(0, args.n - batch + 1, batch):
            chunk = [[{"role": "assistant", "content": t}] for t in texts[i : i + batch]]
            reward.fn(prompts=None, completions=chunk, completion_ids=ids[i : i + batch], **columns)
        rate = (args.n // batch * batch) / (time.perf_counter() - start)
        print(f"{name:<16} {rate:>14,.0f}")


if __name__ == "__main__":
    main()
