"""A real chat-completions server on 127.0.0.1 for the judge tests: real sockets and HTTP, canned replies.

    with ChatServer(reply=lambda prompt: "correct", delay=0.05) as server:
        judge_reward(..., base_url=server.url, model="judge")
        server.prompts, server.max_in_flight

`server.bodies` holds every request's JSON body (max_tokens, temperature); `fenced(prompt)` is the answer a judge
prompt fences. `fail_first` requests are answered `fail_status` (a flaky or rate-limiting judge), with `fail_headers` (Retry-After);
`body` replaces the whole response (a server speaking another protocol); `choice` replaces the choice (a null content,
a finish_reason); `delay` holds each answer back (timeouts, concurrency).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    def __init__(
        self,
        reply=lambda prompt: "correct",
        delay=0.0,
        fail_first=0,
        fail_status=503,
        body=None,
        fail_headers=None,
        choice=None,
    ):
        self.reply, self.delay, self.body, self.choice = reply, delay, body, choice
        self.fail_first, self.fail_status, self.fail_headers = fail_first, fail_status, fail_headers or {}
        self.times: list[float] = []
        self.prompts: list[str] = []
        self.headers: list[dict] = []
        self.bodies: list[dict] = []
        self.models: list[str] = []
        self.received = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.received += 1
                    number = server.received
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server.headers.append(dict(self.headers))
                    server.bodies.append(request)
                    server.times.append(time.monotonic())
                try:
                    time.sleep(server.delay)
                    if self.path != "/v1/chat/completions":
                        return self._send(404, {"error": f"no route {self.path}"})
                    if number <= server.fail_first:
                        return self._send(server.fail_status, {"error": "try again"}, server.fail_headers)
                    prompt = request["messages"][-1]["content"]
                    with server._lock:
                        server.prompts.append(prompt)
                        server.models.append(request.get("model"))
                    if server.body is not None:
                        return self._send(200, server.body)
                    text = server.reply(prompt)
                    if isinstance(text, int):  # a status for this prompt alone
                        return self._send(text, {"error": "not this one"})
                    message = {"role": "assistant", "content": text}
                    choice = server.choice or {"index": 0, "message": message, "finish_reason": "stop"}
                    return self._send(200, {"object": "chat.completion", "choices": [choice]})
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _send(self, status: int, payload, headers=None) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

        return Handler


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fenced(prompt: str) -> str:
    """The text between a judge prompt's first <candidate_answer> and the </candidate_answer> after it, stripped
    ('' when the prompt has no such fence)."""
    start = prompt.find("<candidate_answer>")
    end = prompt.find("</candidate_answer>", start) if start >= 0 else -1
    return prompt[start + len("<candidate_answer>") : end].strip() if end >= 0 else ""
