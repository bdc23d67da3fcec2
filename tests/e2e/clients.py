"""The two official MCP clients, driven headless through one interface:
`await client.call_tool(name, args)` runs whatever OAuth the SDK decides on (discovery,
registration, authorization through the harness's Browser, refresh) and returns the text.
Each client keeps its registration and tokens in memory for its whole life, like a desktop
app that stays open across the server's deploys.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx2
from mcp import ClientSession
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from harness import CALLBACK, Browser

NODE_DIR = Path(os.environ.get("E2E_NODE_DIR", Path(__file__).parent / "node"))


class ClientFailed(Exception):
    pass


class _Storage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, info):
        self.client_info = info


class PyClient:
    kind = "python"

    def __init__(self, server_url: str, browser: Browser, metadata_url: str | None = None):
        self.server_url, self.browser = server_url, browser
        self.storage = _Storage()
        self._callback: str | None = None
        self.provider = OAuthClientProvider(
            server_url,
            OAuthClientMetadata(client_name="e2e python client", redirect_uris=[CALLBACK],
                                grant_types=["authorization_code", "refresh_token"],
                                response_types=["code"], token_endpoint_auth_method="none"),
            self.storage, redirect_handler=self._redirect, callback_handler=self._callback_result,
            client_metadata_url=metadata_url)

    async def _redirect(self, url: str) -> None:
        self._callback = await self.browser.authorize(url)

    async def _callback_result(self) -> AuthorizationCodeResult:
        q = {k: v[0] for k, v in parse_qs(urlparse(self._callback).query).items()}
        if "code" not in q:
            raise ClientFailed(f"authorization refused: {q.get('error')}")
        return AuthorizationCodeResult(code=q["code"], state=q.get("state"), iss=q.get("iss"))

    async def call_tool(self, name: str, args: dict[str, Any]) -> str:
        try:
            async with httpx2.AsyncClient(auth=self.provider, timeout=30) as http:
                async with streamable_http_client(self.server_url, http_client=http) as (read, write):
                    async with ClientSession(read, write) as session:
                        await session.initialize()
                        result = await session.call_tool(name, args)
        except ClientFailed:
            raise
        except BaseException as e:  # the SDK wraps failures in exception groups
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            raise ClientFailed(repr(e)) from e
        if result.is_error:
            raise ClientFailed(str(result.content))
        return result.content[0].text

    async def refresh_token(self) -> str | None:
        return self.storage.tokens.refresh_token if self.storage.tokens else None

    async def close(self) -> None:
        pass


class TsClient:
    """`node client.mjs` as a child process, speaking JSON lines on stdin/stdout."""

    kind = "typescript"

    def __init__(self, server_url: str, browser: Browser, log: Path, metadata_url: str | None = None):
        self.server_url, self.browser, self.log = server_url, browser, log
        self.metadata_url = metadata_url
        self.proc: asyncio.subprocess.Process | None = None

    async def _ensure(self) -> asyncio.subprocess.Process:
        if self.proc is None:
            self._log = open(self.log, "a")
            self.proc = await asyncio.create_subprocess_exec(
                "node", str(NODE_DIR / "client.mjs"), self.server_url, CALLBACK, *filter(None, [self.metadata_url]),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=self._log,
                start_new_session=True)
        return self.proc

    async def _request(self, command: dict[str, Any]) -> dict[str, Any]:
        proc = await self._ensure()
        proc.stdin.write((json.dumps(command) + "\n").encode())
        await proc.stdin.drain()
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), 120)
            if not line:
                raise ClientFailed("node client exited")
            msg = json.loads(line)
            if msg.get("event") == "authorize":
                try:
                    callback = await self.browser.authorize(msg["url"])
                except Exception as e:  # tell the script, which then fails the call
                    callback = f"{CALLBACK}?error=browser_failed&error_description={type(e).__name__}"
                proc.stdin.write((json.dumps({"callback": callback}) + "\n").encode())
                await proc.stdin.drain()
                continue
            return msg

    async def call_tool(self, name: str, args: dict[str, Any]) -> str:
        msg = await self._request({"op": "call_tool", "name": name, "args": args})
        if not msg.get("ok"):
            raise ClientFailed(msg.get("error"))
        return msg["text"]

    async def refresh_token(self) -> str | None:
        return (await self._request({"op": "tokens"})).get("refresh_token")

    async def close(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
            self._log.close()
