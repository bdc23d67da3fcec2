from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

import pytest

from clients import PyClient, TsClient
from harness import Authstore, Browser, CutProxy, Portal, Proc

# Filled by test_latency.py, printed at the end of the run.
LATENCY: dict[str, dict[str, float]] = {}


class Env:
    """Everything one test starts; `close` stops it all, whatever happened."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.key_file = workdir / "signing.key"
        self.key_file.write_text(secrets.token_urlsafe(48))
        self.browser = Browser()
        self.clients: list = []

    def authstore(self) -> Authstore:
        return Authstore(self.workdir).start()

    def proxy(self, upstream_ws: str) -> CutProxy:
        return CutProxy(upstream_ws)

    def portal(self, store_url: str | None, **kw) -> Portal:
        return Portal(self.workdir, self.key_file, store_url, **kw).start()

    def client(self, kind: str, portal: Portal, metadata_url: str | None = None):
        c = (PyClient(portal.resource, self.browser, metadata_url) if kind == "python"
             else TsClient(portal.resource, self.browser, self.workdir / "ts-client.log", metadata_url))
        self.clients.append(c)
        return c

    def run(self, coro) -> None:
        async def main():
            try:
                await coro
            finally:
                for c in self.clients:
                    await c.close()
        asyncio.run(main())

    def close(self) -> None:
        Proc.stop_all()


@pytest.fixture
def env(tmp_path: Path, request):
    e = Env(tmp_path)
    yield e
    e.close()
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for log in sorted(tmp_path.glob("*.log")):
            print(f"\n==== {log.name} (last lines)")
            print("\n".join(log.read_text(errors="replace").splitlines()[-25:]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call = rep


@pytest.fixture(params=["python", "typescript"])
def client_kind(request) -> str:
    return request.param


def pytest_sessionstart(session):
    binary = os.environ.get("AUTHSTORE_BIN")
    if binary and not Path(binary).exists():
        raise pytest.UsageError(f"AUTHSTORE_BIN={binary} does not exist (build it with `cargo build`)")


def pytest_terminal_summary(terminalreporter):
    if not LATENCY:
        return
    tr = terminalreporter
    tr.section("latency through the portal (median ms)")
    steps = ["authorize", "token", "refresh"]
    tr.write_line(f"{'store':<12}{'runs':>6}" + "".join(f"{s:>12}" for s in steps))
    for store, row in LATENCY.items():
        tr.write_line(f"{store:<12}{int(row['runs']):>6}" + "".join(f"{row[s]:>12.1f}" for s in steps))
