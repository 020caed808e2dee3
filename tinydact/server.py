"""`tinydact serve`: the scheduler's `Service` behind HTTP, as a plain ASGI app under uvicorn.

    POST /classify   {"texts": ["a text", ["text a", "text b"], ...]}   (a two-string list: a pair)
                     -> 200 {"results": [...]}: what `tinydact.load(M)(texts)` returns, in input order
    GET  /health     -> 200 {"status": "ok", "model": ..., "num_blocks": N, "scheduler": ...}
    GET  /metrics    -> 200 the service's counts, queues and latency quantiles (`Service.metrics`)

A bad request gets a 4xx and {"error": "one line"}; a full service 503 with Retry-After. The
app is ~100 lines of ASGI (no web framework): the request's body is read, parsed, handed to
`Service.submit`, and the future awaited, so the event loop never runs the model. On Ctrl-C
or SIGTERM uvicorn stops listening and lets the requests in flight finish; then the app's
lifespan shutdown closes the service, which answers whatever it still holds.
"""

import asyncio
import json
import signal
import socket
import threading

from .errors import TinydactError
from .scheduler import QueueFull

MAX_BODY = 1 << 20  # bytes in a request body


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse_texts(body: bytes) -> list:
    """The inputs of a /classify body: texts, and pairs as tuples (what `Classifier` takes)."""
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(400, f"the body is not JSON: {e}") from None
    if not isinstance(request, dict) or "texts" not in request:
        raise BadRequest(400, 'expected a JSON object {"texts": [...]}')
    unknown = sorted(set(request) - {"texts"})
    if unknown:
        raise BadRequest(400, f"unknown key {unknown[0]!r}: the body is {{\"texts\": [...]}}")
    texts = request["texts"]
    if not isinstance(texts, list) or not texts:
        raise BadRequest(400, '"texts" must be a non-empty list of texts and [text_a, text_b] pairs')
    items = []
    for i, x in enumerate(texts, start=1):
        if isinstance(x, list) and len(x) == 2 and all(isinstance(t, str) for t in x):
            x = tuple(x)
        elif not isinstance(x, str):
            raise BadRequest(400, f"text {i} is neither a string nor a [text_a, text_b] pair of strings")
        items.append(x)
    return items


def make_app(service, info: dict):
    """The ASGI app over `service` (a `scheduler.Service`); `info` goes into /health."""

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        if scope["type"] != "http":
            return
        try:
            status, answer = await route(scope, receive)
        except BadRequest as e:
            status, answer = e.status, {"error": str(e)}
        except Exception as e:  # a fault of the model or the machine, never the client's
            status, answer = 500, {"error": f"{type(e).__name__}: {e}".replace("\n", " ")}
        body = json.dumps(answer, ensure_ascii=False).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 503:
            headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def route(scope, receive):
        path, method = scope["path"], scope["method"]
        routes = {"/classify": "POST", "/health": "GET", "/metrics": "GET"}
        if path not in routes:
            raise BadRequest(404, f"no such endpoint {path}: POST /classify, GET /health, GET /metrics")
        if method != routes[path]:
            raise BadRequest(405, f"{path} takes {routes[path]}")
        if path == "/health":
            return 200, {"status": "ok", **info}
        if path == "/metrics":
            return 200, service.metrics()
        items = parse_texts(await read_body(receive))
        try:
            future = service.submit(items)
        except QueueFull as e:
            raise BadRequest(503, str(e)) from None
        except (TypeError, TinydactError) as e:
            raise BadRequest(400, str(e)) from None
        try:
            return 200, {"results": await asyncio.wrap_future(future)}
        except TinydactError as e:  # e.g. an answer that is not a finite number
            return 500, {"error": str(e)}

    async def lifespan(receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.get_running_loop().run_in_executor(None, service.close)  # answers what it holds
                await send({"type": "lifespan.shutdown.complete"})
                return

    return app


async def read_body(receive) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest(400, "the client went away")
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_BODY:
            raise BadRequest(413, f"the body is over {MAX_BODY} bytes")
        if not message.get("more_body"):
            return b"".join(chunks)


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port (port 0: any free one), or one clear error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    except OSError as e:
        raise TinydactError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def uvicorn_or_error():
    try:
        import uvicorn
    except ImportError:
        raise TinydactError('tinydact serve needs uvicorn: pip install -e ".[serve]"') from None
    return uvicorn


def serve(service, model: str, sock: socket.socket) -> int:
    """Run the app on `sock` until Ctrl-C or SIGTERM; in-flight requests finish first.
    `model` names the model in /health. Returns the number of requests answered."""
    uvicorn = uvicorn_or_error()
    clf = service.clf
    info = {"model": model, "num_blocks": clf.num_blocks, "labels": clf.labels, "scheduler": service.name}

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):  # Ctrl-C, SIGTERM: new rows stop waiting for fuller batches
            threading.Thread(target=service.close, daemon=True).start()  # (a signal handler must not wait on a lock)
            super().handle_exit(sig, frame)

    config = uvicorn.Config(make_app(service, info), lifespan="on", log_level="warning", access_log=False)
    # uvicorn raises the signal it caught again once everything has finished: SIGTERM then
    # arrives as a KeyboardInterrupt, like Ctrl-C, and both end here, exit status 0
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    return service.metrics()["requests"]
