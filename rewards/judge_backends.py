"""Where the `judge` reward's questions go: an OpenAI-compatible chat-completions endpoint, or a local causal LM.

Both take rendered rubric prompts and return the judge's raw replies, one per prompt, in order; a prompt that could not
be answered comes back as its `JudgeError` (the caller keeps the replies that did arrive).

- `HTTPJudge` speaks the chat-completions protocol (`POST {base_url}/chat/completions`) that `vllm serve`, OpenAI and
  most hosted judges answer, with the standard library only: requests run concurrently on a bounded thread pool, each
  with a timeout and retries with exponential backoff (a `Retry-After` in seconds or as a date is honoured) on
  connection errors, timeouts, 408/409/425/429 and 5xx other than 501/505. When a request could not reach the
  endpoint at all through its retries, the endpoint is taken as down for `DOWN_FOR` seconds and requests fail at once
  instead of each retrying again (a dead judge then costs seconds per step, not minutes); any reply ends that.
- `LocalJudge` loads any Hugging Face causal LM once and generates greedily in batches, on the training GPU when there
  is one (`device: auto`) or on the CPU.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from med_r1.errors import ConfigError
from med_r1.tiny import resolve_builtin

RETRYABLE = {408, 409, 425, 429}
"""HTTP statuses below 500 worth asking again (timeouts, conflicts, rate limits); every 5xx is too, but 501 and 505
(the server will never do it)."""
DOWN_FOR = 30.0
"""Seconds an endpoint that failed every retry is treated as down (requests fail fast meanwhile)."""
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


class JudgeError(RuntimeError):
    """The judge could not answer (unreachable, timed out, refused the request, or spoke another protocol)."""


class Reply(str):
    """A judge's reply text; `cut_off` when the judge stopped at max_tokens (such a reply is not cached unless it
    holds a verdict)."""

    cut_off: bool = False


def retryable(status: int) -> bool:
    return status in RETRYABLE or (status >= 500 and status not in (501, 505))


class HTTPJudge:
    """An OpenAI-compatible chat-completions endpoint, asked concurrently (at most `max_concurrency` at a time)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_concurrency: int = 8,
        max_tokens: int = 16,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"judge: kwargs.base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}"
            )
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout, self.retries, self.backoff = model, timeout, retries, backoff
        self.max_tokens = max_tokens
        self.headers = {"Content-Type": "application/json"}
        if api_key_env:
            key = os.environ.get(api_key_env, "").strip()
            if not key:
                raise ConfigError(
                    f"judge: kwargs.api_key_env names {api_key_env}, which is not set; export {api_key_env}=<key> "
                    "before starting (the key itself never goes into a recipe)"
                )
            if any(ord(c) < 32 or ord(c) == 127 for c in key):
                raise ConfigError(
                    f"judge: the key in {api_key_env} holds control characters (a pasted line break?); set it to the "
                    "key alone"
                )
            self.headers["Authorization"] = f"Bearer {key}"
        host = urllib.parse.urlsplit(base_url).hostname or ""
        # A judge on this machine is reached directly, whatever http_proxy says; others follow the environment.
        handlers = [urllib.request.ProxyHandler({})] if host in _LOCAL_HOSTS else []
        self._opener = urllib.request.build_opener(*handlers)
        self._pool = ThreadPoolExecutor(max(1, max_concurrency), thread_name_prefix="med-r1-judge")
        self._lock = threading.Lock()
        self._down_until, self._down_reason = 0.0, ""
        self.requests = 0
        """HTTP requests sent (retries included)."""

    def complete(self, prompts: list[str]) -> list[str | JudgeError]:
        return list(self._pool.map(self._answer, prompts))

    def _answer(self, prompt: str) -> str | JudgeError:
        try:
            return self.ask(prompt)
        except JudgeError as exc:
            return exc
        except Exception as exc:  # anything else still fails this prompt only, with the URL, not the whole batch
            return JudgeError(f"the judge at {self.url}: {type(exc).__name__}: {exc}")

    def ask(self, prompt: str, retries: int | None = None) -> str:
        """The judge's reply to one prompt; JudgeError once every attempt has failed."""
        retries = self.retries if retries is None else retries
        body = json.dumps(
            {
                "model": self.model,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": 0.0,
                "max_tokens": self.max_tokens,
            }
        ).encode()
        failure, reached = "", False
        for attempt in range(retries + 1):
            with self._lock:
                down = time.monotonic() < self._down_until
            if down:
                raise JudgeError(f"{self._down_reason} (not asked again for {DOWN_FOR:.0f} s)")
            wait = self.backoff * 2**attempt
            with self._lock:
                self.requests += 1
            try:
                request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
                with self._opener.open(request, timeout=self.timeout) as response:
                    payload = response.read()
                with self._lock:
                    self._down_until = 0.0  # it answers
                return self._content(payload)
            except urllib.error.HTTPError as exc:
                reached = True
                with self._lock:
                    self._down_until = 0.0  # it answers, if only with an error
                try:
                    detail = exc.read()[:300].decode("utf-8", "replace").strip()
                except Exception:  # a body that stalls or breaks off: the status says enough
                    detail = ""
                if not retryable(exc.code):
                    raise JudgeError(
                        f"the judge at {self.url} answered HTTP {exc.code} ({detail}); {_hint(exc.code, self)}"
                    ) from None
                failure = f"HTTP {exc.code} {detail}".strip()
                wait = max(wait, _retry_after(exc.headers.get("Retry-After")))
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", exc)
                failure = f"timed out after {self.timeout:g} s" if _is_timeout(reason) else f"{reason}"
            if attempt < retries:
                time.sleep(wait)
        reason = (
            f"the judge at {self.url} failed {retries + 1} time(s): {failure}. Is it running? Start it with "
            f"`vllm serve {self.model or 'JUDGE_MODEL'}` (or check kwargs.base_url, kwargs.timeout)"
        )
        if not reached:  # it never answered: down; one prompt it keeps refusing says nothing about the others
            with self._lock:
                self._down_until, self._down_reason = time.monotonic() + DOWN_FOR, reason
        raise JudgeError(reason)

    def _content(self, payload: bytes) -> str:
        try:
            choice = json.loads(payload)["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeError(
                f"the judge at {self.url} answered something that is not a chat completion "
                f"({payload[:200].decode('utf-8', 'replace')!r}); kwargs.base_url must point at an OpenAI-compatible "
                "server, usually ending in /v1"
            ) from None
        cut_off = choice.get("finish_reason") == "length"
        if not isinstance(content, str) or not content.strip():
            if cut_off:  # a reasoning judge still thinking when max_tokens ran out
                raise JudgeError(
                    f"the judge at {self.url} ran out of kwargs.max_tokens={self.max_tokens} before answering (a "
                    "reasoning model?); raise kwargs.max_tokens"
                )
            content = ""
        reply = Reply(content)
        reply.cut_off = cut_off
        return reply


def _is_timeout(reason) -> bool:
    return isinstance(reason, TimeoutError) or "timed out" in str(reason)


def _retry_after(value: str | None) -> float:
    """Seconds a Retry-After header asks for (a number of seconds or an HTTP date), at most 30."""
    if not value:
        return 0.0
    try:
        return min(max(float(value), 0.0), 30.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return min(max(when.timestamp() - time.time(), 0.0), 30.0)


def _hint(status: int, judge: HTTPJudge) -> str:
    if status in (401, 403):
        if "Authorization" not in judge.headers:
            return "the server wants a key: set kwargs.api_key_env to the name of a variable holding it"
        return "the server refused the key: check the variable kwargs.api_key_env names"
    if status == 404:
        return f"check kwargs.base_url (usually ending in /v1) and that the server serves kwargs.model {judge.model!r}"
    return "check kwargs.model and the server's log"


class LocalJudge:
    """A Hugging Face causal LM in this process, loaded once, asked in batches with greedy decoding."""

    def __init__(self, model: str, device: str = "auto", batch_size: int = 16, max_tokens: int = 16):
        import torch  # lazy: only a local judge needs torch and transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_builtin(model)
        cuda = torch.cuda.is_available() and device != "cpu"
        if device == "auto":
            self.device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
        else:
            self.device = torch.device(device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
            self.model = AutoModelForCausalLM.from_pretrained(
                path, dtype=torch.bfloat16 if self.device.type == "cuda" else torch.float32
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"judge: cannot load the local judge {model!r} ({exc}); kwargs.model must be a Hugging Face causal "
                "LM id or folder"
            ) from None
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if self.tokenizer.pad_token is None:
            raise ConfigError(
                f"judge: the local judge {model!r} has no pad, end-of-sequence or unknown token to pad batches "
                "with; use a model whose tokenizer has one"
            )
        self.batch_size, self.max_tokens = batch_size, max_tokens
        self.requests = 0

    def complete(self, prompts: list[str]) -> list[str | JudgeError]:
        import torch

        texts = [self._render(p) for p in prompts]
        replies: list[str | JudgeError] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                add_special_tokens=not self.tokenizer.chat_template,  # the template wrote BOS already
            )
            batch = batch.to(self.device)
            with torch.inference_mode():
                out = self.model.generate(
                    **batch,
                    max_new_tokens=self.max_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            replies += self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
            self.requests += 1
        return replies

    def ask(self, prompt: str, retries: int | None = None) -> str:
        reply = self.complete([prompt])[0]
        if isinstance(reply, JudgeError):
            raise reply
        return reply

    def _render(self, prompt: str) -> str:
        if self.tokenizer.chat_template:
            messages = [{"role": "user", "content": prompt}]
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return prompt
