"""The protected MCP server: two tools behind bearer tokens from auth_server.py.

The MCP SDK does the transport (streamable HTTP), the 401 + WWW-Authenticate challenge, the
RFC 9728 protected-resource metadata and the scope and audience checks; this file supplies
the token verifier. A token is accepted when its signature, issuer, audience and expiry
hold and its grant has not been revoked. Revocations reach this process over its one
authstore WebSocket (`token.subscribe`, kinds revoked and reuse_detected, resumed by cursor
across reconnects). A grant first seen by this process is looked up once with `token.list`,
which covers revocations from before it started, so a restart forgets nothing.
Run `python resource_server.py --help` for the flags.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

import access_tokens
from authstore_client import AuthstoreClient

log = logging.getLogger("resource")


class GrantCheckingVerifier:
    def __init__(self, key: bytes, issuer: str, resource: str, store: AuthstoreClient | None):
        self.key, self.issuer, self.resource, self.store = key, issuer, resource, store
        # Derived from authstore, rebuilt after a restart: grants seen revoked, and grants
        # confirmed live since this process started.
        self.revoked: set[str] = set()
        self.live: set[str] = set()

    async def start(self) -> None:
        if self.store is None:
            return
        await self.store.start()
        # Start "from now" holding a cursor to resume from: everything after `head` is replayed.
        head = (await self.store.call("server.info")).get("head")
        params = {"kinds": ["revoked", "reuse_detected"]} | ({"since": head} if head else {})
        await self.store.subscribe("token.subscribe", params, self.on_event, self.on_gap)

    async def on_event(self, event: dict) -> None:
        if event["grant_id"] not in self.revoked:
            log.info("grant revoked (%s)", event["kind"])
        self.revoked.add(event["grant_id"])

    async def on_gap(self) -> None:
        # Events may have been missed (authstore without `server.info.head`): re-check grants.
        self.live.clear()

    async def verify_token(self, token: str) -> AccessToken | None:
        claims = access_tokens.verify(self.key, token, issuer=self.issuer, audience=self.resource)
        if claims is None:
            return None
        grant = claims["grant_id"]
        if self.store is not None and grant not in self.live and grant not in self.revoked:
            # Fails closed: if authstore cannot answer, the token is refused.
            try:
                found = await self.store.call("token.list", {"grant_id": grant, "limit": 1})
            except Exception as e:  # noqa: BLE001 - any failure means "not known to be live"
                log.warning("grant check failed: %s", e)
                return None
            (self.live if found["items"] else self.revoked).add(grant)
        if grant in self.revoked:  # checked last: an event may have arrived meanwhile
            return None
        return AccessToken(token=token, client_id=claims["client_id"], scopes=claims["scope"].split(),
                           expires_at=claims["exp"], resource=claims["aud"], subject=claims["sub"],
                           claims=claims)


def build(args: argparse.Namespace) -> tuple[MCPServer, GrantCheckingVerifier]:
    store = None
    if args.store == "authstore":
        api_key = open(args.authstore_api_key_file).read().strip() if args.authstore_api_key_file else None
        store = AuthstoreClient(args.authstore, api_key)
    verifier = GrantCheckingVerifier(access_tokens.load_key(args.signing_key_file),
                                     args.issuer.rstrip("/"), args.resource, store)
    mcp = MCPServer("authstore-demo", token_verifier=verifier, auth=AuthSettings(
        issuer_url=args.issuer, resource_server_url=args.resource, required_scopes=["mcp:tools"],
        validate_token_resource=True))

    @mcp.tool()
    def whoami() -> str:
        """The user and client the presented token was issued to."""
        token = get_access_token()
        return f"user={token.subject} client={token.client_id}" if token else "anonymous"

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    return mcp, verifier


async def serve(args: argparse.Namespace) -> None:
    mcp, verifier = build(args)
    host, _, port = args.listen.rpartition(":")
    # Stateless: no MCP session lives in this process, so a restart costs the client nothing.
    app = mcp.streamable_http_app(stateless_http=True, json_response=True, host=host)
    await verifier.start()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=int(port), log_level="warning"))
    await server.serve()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", default="127.0.0.1:9100", help="HOST:PORT")
    p.add_argument("--resource", help="this server's MCP URL (default http://LISTEN/mcp)")
    p.add_argument("--issuer", required=True, help="the authorization server's issuer URL")
    p.add_argument("--store", choices=["authstore", "memory"], default="authstore",
                   help="memory: no revocation checks (control for tests)")
    p.add_argument("--authstore", default="ws://127.0.0.1:8750", help="authstore WebSocket URL")
    p.add_argument("--authstore-api-key-file")
    p.add_argument("--signing-key-file", required=True, help="HS256 key shared with the authorization server")
    args = p.parse_args()
    args.resource = args.resource or f"http://{args.listen}/mcp"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
