"""The `embedding_similarity` reward: how close an open answer's sentence embedding is to the reference report's.

    rewards:
      - {name: embedding_similarity, kwargs: {encoder: emilyalsentzer/Bio_ClinicalBERT, floor: 0.5}}

A text encoder (any transformers AutoModel with its AutoTokenizer) embeds both texts: the mean of the last hidden
state over the tokens the attention mask keeps, L2-normalised, so the score is their cosine similarity. `floor` maps
it to [0, 1]: similarities at or below the floor score 0, identical texts 1 (`(cos - floor) / (1 - floor)`), since
encoders rarely give unrelated medical sentences a cosine near 0. The answer is the text in <answer>...</answer>,
parsed by `med_r1.answers` as for every open answer; an empty one scores 0. Multiple-choice and yes/no rows are scored
by the shared parser, as `judge` scores them.

The encoder is loaded once per process and asked in batches of `batch_size`; reference embeddings are kept by text
(a reference is embedded once per process, however many rollouts and epochs ask for it). `med-r1 eval` uses the
same scorer with `eval.open_scorer: embedding`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from med_r1.answers import closed_correct, completion_text, extract_answer, is_correct, normalise_text
from med_r1.errors import ConfigError
from med_r1.rewards.registry import register_reward, settings_of

MAX_CACHED = 200_000
"""Reference embeddings kept per encoder (a few hundred MB for a base-size encoder at most)."""


@dataclass(frozen=True)
class EmbeddingSettings:
    """Which encoder and how to ask it: the `embedding_similarity` reward's kwargs (and `eval.embedding`)."""

    encoder: str = ""
    max_length: int = 512
    batch_size: int = 32
    device: str = "auto"
    floor: float = 0.0

    def __post_init__(self):
        problems = []
        if not self.encoder:
            problems.append("kwargs.encoder: name a text encoder (a transformers model folder or hub id)")
        for key in ("max_length", "batch_size"):
            if getattr(self, key) < 1:
                problems.append(f"kwargs.{key}: must be at least 1, got {getattr(self, key)}")
        if not -1.0 <= self.floor < 1.0:
            problems.append(f"kwargs.floor: must be at least -1 and below 1 (a cosine similarity), got {self.floor}")
        if problems:
            raise ConfigError("embedding_similarity: bad settings", problems)

    @property
    def tag(self) -> str:
        """Names this scorer in files that keep its scores (evaluation's similarity.jsonl)."""
        key = json.dumps([self.encoder, self.max_length, self.floor])
        return f"{self.encoder}@{hashlib.sha256(key.encode()).hexdigest()[:10]}"


class Encoder:
    """A loaded text encoder: `embed` gives one L2-normalised mean-pooled vector per text."""

    def __init__(self, settings: EmbeddingSettings, where: str = "embedding_similarity: kwargs"):
        import torch  # lazy: torch and transformers load only when a reward or evaluation needs the encoder
        from transformers import AutoModel, AutoTokenizer

        self.settings = settings
        self.references: dict[str, object] = {}
        """Embeddings of reference texts, by text."""
        name = settings.encoder
        if name.startswith(("/", ".", "~")) and not Path(name).expanduser().exists():
            raise ConfigError(
                f"{where}.encoder: {name} does not exist; give a folder holding a transformers text encoder and its "
                "tokenizer, or a hub id"
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name)
            self.model = AutoModel.from_pretrained(name)
        except (OSError, ValueError, KeyError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"{where}.encoder: cannot load the text encoder {name!r} ({reason}); give a folder holding a "
                "transformers model and its tokenizer, or a hub id already downloaded"
            ) from None
        if self.tokenizer.pad_token is None:  # decoder-style encoders: any token will do, the mask hides it
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if settings.device != "auto":
            self.device = torch.device(settings.device)
        else:  # this process's GPU (each rank of a multi-GPU run has its own), else the CPU
            self.device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()

    def embed(self, texts: list[str]):
        """A (len(texts), hidden) tensor of unit vectors, computed `batch_size` texts at a time."""
        import torch

        chunks = []
        for start in range(0, len(texts), self.settings.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.settings.batch_size],
                padding=True,
                truncation=True,
                max_length=self.settings.max_length,
                return_tensors="pt",
            ).to(self.device)
            with torch.no_grad():
                hidden = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
        return torch.cat(chunks) if chunks else torch.empty(0)

    def embed_references(self, texts: list[str]):
        """Like `embed`, but each distinct reference text is embedded once per process."""
        import torch

        missing = [t for t in dict.fromkeys(texts) if t not in self.references]
        if missing:
            if len(self.references) + len(missing) > MAX_CACHED:
                self.references.clear()
            self.references.update(zip(missing, self.embed(missing), strict=True))
        return torch.stack([self.references[t] for t in texts])

    def similarity(self, answers: list[str], references: list[str]) -> list[float]:
        """One score in [0, 1] per (answer, reference) pair: the cosine similarity mapped above `floor`."""
        if not answers:
            return []
        distinct = list(dict.fromkeys(answers))  # identical rollouts of one prompt are embedded once
        vectors = dict(zip(distinct, self.embed(distinct), strict=True))
        refs = self.embed_references(references)
        floor = self.settings.floor
        scores = []
        for answer, ref in zip(answers, refs, strict=True):
            cosine = float(vectors[answer] @ ref)
            scores.append(min(1.0, max(0.0, (cosine - floor) / (1.0 - floor))))
        return scores


_ENCODERS: dict[EmbeddingSettings, Encoder] = {}


def get_encoder(settings: EmbeddingSettings, where: str = "embedding_similarity: kwargs") -> Encoder:
    """The one encoder of these settings in this process; a ConfigError naming `where`.encoder if it cannot load."""
    if settings not in _ENCODERS:
        _ENCODERS[settings] = Encoder(settings, where)
    return _ENCODERS[settings]


def settings_from(kwargs: dict, where: str) -> EmbeddingSettings:
    """EmbeddingSettings from a recipe's kwargs; unknown keys and bad values are a ConfigError naming `where`."""
    return settings_of(EmbeddingSettings, kwargs, where, "embedding")


@dataclass
class EmbeddingScorer:
    """Evaluation's open scorer: `score` turns (question, reference, answer) triples into similarities."""

    settings: EmbeddingSettings
    encoder: Encoder

    @property
    def tag(self) -> str:
        return self.settings.tag

    def score(self, items: list[tuple[str, str, str]]) -> list[float]:
        scores = self.encoder.similarity([a for _, _, a in items], [r for _, r, _ in items])
        return [s if normalise_text(a) else 0.0 for (_, _, a), s in zip(items, scores, strict=True)]


def start_scorer(kwargs: dict, where: str) -> EmbeddingScorer:
    """The evaluation's embedding scorer, its encoder loaded (so a bad encoder fails before any generation)."""
    settings = settings_from(kwargs, where)
    return EmbeddingScorer(settings, get_encoder(settings, where))


@register_reward("embedding_similarity", kind="judged")
def embedding_similarity_reward(
    completions,
    solution,
    options=None,
    answer_type=None,
    *,
    encoder: str = "",
    max_length: int = 512,
    batch_size: int = 32,
    device: str = "auto",
    floor: float = 0.0,
    **kwargs,
) -> list[float | None]:
    """Open answers: cosine similarity of sentence embeddings to the reference, in [0, 1]; the parser's for the rest.

    >>> embedding_similarity_reward(["<answer>B</answer>", "<answer>No.</answer>", "<answer></answer>"],
    ...     ["B", "no", "a mass in the left lung"], answer_type=["choice", "closed", "open"], encoder="any")
    [1.0, 1.0, 0.0]
    """
    settings = EmbeddingSettings(encoder, max_length, batch_size, device, floor)
    n = len(completions)
    kinds = answer_type if answer_type is not None else ["open"] * n
    opts = options if options is not None else [None] * n
    scores: list[float | None] = [None] * n
    asked: list[tuple[int, str]] = []
    for i, (completion, gold, kind) in enumerate(zip(completions, solution, kinds, strict=True)):
        text = completion_text(completion)
        answer = extract_answer(text).text
        if kind == "choice":
            scores[i] = 1.0 if is_correct(text, gold, opts[i], "choice") else 0.0
        elif kind == "closed":
            scores[i] = 1.0 if closed_correct(answer, gold) else 0.0
        elif not normalise_text(answer):
            scores[i] = 0.0  # no answer: nothing to compare, and no call
        else:
            asked.append((i, answer))
    if asked:
        similar = get_encoder(settings).similarity([a for _, a in asked], [solution[i] for i, _ in asked])
        for (i, _), score in zip(asked, similar, strict=True):
            scores[i] = score
    return scores
