"""Real processes on loopback for the end-to-end suite: authstore, the example portal's
authorization and resource servers, a headless "browser", raw OAuth calls, and a proxy that
cuts the portal's WebSocket to authstore at a chosen moment.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlparse

import httpx

REPO = Path(__file__).resolve().parents[2]
PORTAL_DIR = REPO / "examples" / "mcp-portal"
AUTHSTORE_BIN = os.environ.get("AUTHSTORE_BIN") or str(
    Path(os.environ.get("CARGO_TARGET_DIR", "/var/cache/authstore/target")) / "debug" / "authstore")
# The runner's trap kills whatever is listed here, should this process die without cleaning up.
PID_FILE = os.environ.get("E2E_PID_FILE")
CALLBACK = "http://127.0.0.1:8976/callback"  # never served: the browser stops at the redirect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """One child process in its own process group, with a log file kept across restarts."""

    running: list[Proc] = []

    def __init__(self, name: str, argv: list[str], log: Path, ready_url: str, cwd: Path | None = None,
                 env: dict[str, str] | None = None):
        self.name, self.argv, self.log, self.ready_url, self.cwd = name, argv, log, ready_url, cwd
        self.env = {**os.environ, **(env or {})}
        self.popen: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> Proc:
        with open(self.log, "a") as out:
            out.write(f"---- start {self.name}\n")
            out.flush()
            self.popen = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, cwd=self.cwd, env=self.env,
                                          start_new_session=True)
        Proc.running.append(self)
        Proc._write_pids()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.ready_url, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.tail()}")

    def stop(self) -> None:
        if self.popen and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self in Proc.running:
            Proc.running.remove(self)
        Proc._write_pids()

    def kill9(self) -> None:
        assert self.popen is not None
        self.popen.kill()
        self.popen.wait()
        Proc.running.remove(self)
        Proc._write_pids()

    def restart(self) -> None:
        self.stop()
        self.start()

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    @classmethod
    def _write_pids(cls) -> None:
        if PID_FILE:
            Path(PID_FILE).write_text("".join(f"{p.popen.pid}\n" for p in cls.running))

    @classmethod
    def stop_all(cls) -> None:
        for p in reversed(cls.running):  # clients of authstore first, authstore last
            p.stop()


class Authstore:
    def __init__(self, workdir: Path, name: str = "authstore"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.proc = Proc(name, [AUTHSTORE_BIN, "serve", "--listen", f"127.0.0.1:{self.port}",
                                "--db", f"surrealkv://{workdir / name}-data"],
                         workdir / f"{name}.log", f"{self.url}/ready",
                         # As production runs it: the idempotency secret is configuration,
                         # kept out of the database (docs/operations.md).
                         env={"RUST_LOG": "authstore=info,warn",
                              "AUTHSTORE_IDEMPOTENCY_SECRET": "e2e-idempotency-secret-0123456789abcdef"})

    def start(self) -> Authstore:
        self.proc.start()
        return self

    def rpc(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """One call over plain HTTP; an error answer is returned as {"error": ...}."""
        r = httpx.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}},
                       timeout=15)
        msg = r.json()
        return {"error": msg["error"]} if "error" in msg else msg["result"]

    def active_tokens(self, grant_id: str) -> list[dict]:
        return self.rpc("token.list", {"grant_id": grant_id})["items"]

    def token_state(self, token: str) -> str:
        """'active', or the invalid_grant reason (rotated, revoked, ...)."""
        got = self.rpc("token.get", {"token": token})
        return got["error"]["data"]["reason"] if "error" in got else "active"


class Portal:
    """The example's authorization server and resource server, on authstore or in memory."""

    def __init__(self, workdir: Path, key_file: Path, store_url: str | None, name: str = "portal",
                 access_ttl: int = 3, issuer: str | None = None, resource: str | None = None,
                 with_resource_server: bool = True, extra_args: tuple[str, ...] = (),
                 rs_args: tuple[str, ...] = ()):
        self.as_port, self.rs_port = free_port(), free_port()
        self.issuer = issuer or f"http://127.0.0.1:{self.as_port}"
        self.base = f"http://127.0.0.1:{self.as_port}"  # where this instance listens
        self.resource = resource or f"http://127.0.0.1:{self.rs_port}/mcp"
        store = ["--store", "authstore", "--authstore", store_url] if store_url else ["--store", "memory"]
        py = [sys.executable, "-u"]
        self.auth = Proc(f"{name}-as", py + [
            "auth_server.py", "--listen", f"127.0.0.1:{self.as_port}", "--issuer", self.issuer,
            "--resource", self.resource, "--signing-key-file", str(key_file),
            "--access-token-ttl", str(access_ttl), "--auto-approve-user", "alice", *store, *extra_args],
            workdir / f"{name}-as.log", f"{self.base}/.well-known/oauth-authorization-server", PORTAL_DIR)
        self.rs = Proc(f"{name}-rs", py + [
            "resource_server.py", "--listen", f"127.0.0.1:{self.rs_port}", "--issuer", self.issuer,
            "--resource", self.resource, "--signing-key-file", str(key_file), *store, *rs_args],
            workdir / f"{name}-rs.log", f"http://127.0.0.1:{self.rs_port}/.well-known/oauth-protected-resource/mcp",
            PORTAL_DIR) if with_resource_server else None

    def start(self) -> Portal:
        self.auth.start()
        if self.rs:
            self.rs.start()
        return self

    def restart(self) -> None:
        """A deploy: both processes stop, new ones start."""
        self.auth.stop()
        if self.rs:
            self.rs.stop()
        self.start()

    def hits(self, method: str, path: str, status: int | None = None) -> int:
        """Requests this authorization server answered, over every restart (its access log)."""
        n = 0
        for m in re.finditer(r"portal (GET|POST) (\S+) (\d{3}) ", self.auth.log.read_text()):
            if m[1] == method and m[2] == path and (status is None or int(m[3]) == status):
                n += 1
        return n


class Browser:
    """Follows /authorize -> /consent -> redirect_uri without a browser, and remembers the
    callback (the harness reads the code from it to replay it)."""

    def __init__(self) -> None:
        self.before_consent: Callable[[str], Awaitable[str] | str] | None = None
        self.last_callback: dict[str, str] | None = None

    async def authorize(self, url: str) -> str:
        async with httpx.AsyncClient(follow_redirects=False, timeout=30) as http:
            r = await http.get(url)
            if r.status_code != 302:
                raise RuntimeError(f"/authorize answered {r.status_code}: {r.text[:200]}")
            consent = urljoin(url, r.headers["location"])
            if self.before_consent:  # e.g. restart the portal, or send consent to another instance
                hook = self.before_consent(consent)
                consent = (await hook) if asyncio.iscoroutine(hook) else hook
            r = await http.get(consent)
            if r.status_code != 302:
                raise RuntimeError(f"/consent answered {r.status_code}: {r.text[:200]}")
        callback = r.headers["location"]
        self.last_callback = {k: v[0] for k, v in parse_qs(urlparse(callback).query).items()}
        return callback


def token_request(base: str, data: dict[str, str], auth: tuple[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{base}/token", data=data, auth=auth, timeout=30)


class CutProxy:
    """A WebSocket relay between a portal and authstore. `cut_after(method)` makes it forward
    the next request for `method`, wait for authstore's answer, drop that answer and abort the
    portal's connection: the call was applied but the portal never hears of it."""

    def __init__(self, upstream_ws: str):
        self.upstream, self.port = upstream_ws, free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.cut_method: str | None = None
        self.cuts: list[str] = []
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self._started.wait(10)

    def cut_after(self, method: str) -> None:
        self.cut_method = method

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.asyncio.server import serve

        async def relay(down):
            async with connect(self.upstream, max_size=2**22) as up:
                pending_cut: dict[Any, asyncio.Event] = {}

                async def from_up():
                    async for msg in up:
                        frame = json.loads(msg)
                        if frame.get("id") in pending_cut:
                            pending_cut.pop(frame["id"]).set()  # swallowed
                            continue
                        await down.send(msg)

                async def from_down():
                    async for msg in down:
                        frame = json.loads(msg)
                        if self.cut_method and frame.get("method") == self.cut_method:
                            self.cut_method = None
                            answered = pending_cut[frame["id"]] = asyncio.Event()
                            await up.send(msg)
                            await asyncio.wait_for(answered.wait(), 30)
                            self.cuts.append(frame["method"])
                            down.transport.abort()  # no close frame: the connection just dies
                            return
                        await up.send(msg)

                tasks = [asyncio.create_task(from_up()), asyncio.create_task(from_down())]
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for t in tasks:
                    t.cancel()

        async with serve(relay, "127.0.0.1", self.port, max_size=2**22):
            self._started.set()
            await asyncio.Future()


class DocumentServer:
    """Serves one client ID metadata document over https on loopback, with a self-signed
    certificate the portal is told to trust (`--client-document-ca`)."""

    def __init__(self, workdir: Path, redirect_uri: str):
        import datetime
        import http.server
        import ipaddress
        import ssl

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                .sign(key, hashes.SHA256()))
        self.cert_file, key_file = workdir / "doc-cert.pem", workdir / "doc-key.pem"
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}/oauth/client.json"
        self.fetches = 0
        body = json.dumps({"client_id": self.url, "client_name": "e2e metadata-document client",
                           "redirect_uris": [redirect_uri], "grant_types": ["authorization_code", "refresh_token"],
                           "response_types": ["code"], "token_endpoint_auth_method": "none"}).encode()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.fetches += 1
                self.send_response(200 if self.path == "/oauth/client.json" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "max-age=3600")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_file, key_file)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
