"""A real chat-completions server on localhost for the tests of the teacher client's users
(`orca-data collect`, judged evaluation): keep-alive HTTP/1.1, quiet, counting each request's
attempts. Subclasses of ChatHandler answer in `do_POST`."""

import http.server
import json
import threading
from collections import Counter


class ChatHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as vLLM and hosted APIs speak

    def log_message(self, *args):  # quiet
        pass

    def reply(self, status, body, headers=()):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class ChatServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the default backlog of 5 can drop a burst of connects past the client's timeout

    def __init__(self, handler, latency=0.0):
        super().__init__(("127.0.0.1", 0), handler)
        self.latency, self.lock = latency, threading.Lock()
        self.attempts, self.log = Counter(), []

    def handle_error(self, request, client_address):  # a client that hung up on a request: expected
        pass

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/v1"
