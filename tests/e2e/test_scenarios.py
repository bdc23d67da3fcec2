"""The example MCP portal on authstore, end to end, with both official MCP clients.

Access tokens live ACCESS_TTL seconds here, so waiting that long makes the next tool call
refresh. tests/e2e/README.md lists what each test proves.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from urllib.parse import urlencode

import httpx

from clients import ClientFailed
from harness import CALLBACK, DocumentServer, token_request

ACCESS_TTL = 3


async def expire_access_token() -> None:
    await asyncio.sleep(ACCESS_TTL + 0.5)


def once(hook):
    """A Browser.before_consent hook that acts on the first consent only."""
    state = {"done": False}

    def run(url: str) -> str:
        if state["done"]:
            return url
        state["done"] = True
        return hook(url) or url
    return run


async def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.1)
    return predicate()


def grant_of(store, refresh_token: str) -> dict:
    meta = store.rpc("token.get", {"token": refresh_token})
    assert "error" not in meta, meta
    return meta


# 1 ------------------------------------------------------------------------------------------

def test_1_full_flow(env, client_kind):
    async def scenario():
        store = env.authstore()
        portal = env.portal(store.ws_url, access_ttl=ACCESS_TTL)
        client = env.client(client_kind, portal)
        assert (await client.call_tool("whoami", {})).startswith("user=alice ")
        assert await client.call_tool("add", {"a": 2, "b": 40}) == "42"
        assert portal.hits("POST", "/register", 201) == 1
        assert portal.hits("GET", "/authorize", 302) == 1
        assert portal.hits("POST", "/token", 200) == 1
        assert len(store.active_tokens(grant_of(store, await client.refresh_token())["grant_id"])) == 1
    env.run(scenario())


# 2 ------------------------------------------------------------------------------------------

def test_2_restart_between_authorize_and_consent(env, client_kind):
    async def scenario():
        store = env.authstore()
        portal = env.portal(store.ws_url, access_ttl=ACCESS_TTL)
        env.browser.before_consent = once(lambda url: portal.auth.restart())
        client = env.client(client_kind, portal)
        assert await client.call_tool("add", {"a": 1, "b": 1}) == "2"
        assert portal.auth.log.read_text().count("---- start") == 2
        assert portal.hits("GET", "/consent", 302) == 1
        assert portal.hits("GET", "/authorize") == 1
    env.run(scenario())


# 3 ------------------------------------------------------------------------------------------

async def deploy_then_call(portal, client):
    """Scenario 3's steps; returns (old refresh token, new one, error or None)."""
    assert await client.call_tool("add", {"a": 1, "b": 2}) == "3"
    old = await client.refresh_token()
    portal.restart()
    await expire_access_token()
    try:
        text = await client.call_tool("add", {"a": 3, "b": 4})
        assert text == "7"
        error = None
    except ClientFailed as e:
        error = e
    return old, await client.refresh_token(), error


def test_3_deploy_keeps_clients_signed_in(env, client_kind):
    async def scenario():
        store = env.authstore()
        portal = env.portal(store.ws_url, access_ttl=ACCESS_TTL)
        client = env.client(client_kind, portal)
        old, new, error = await deploy_then_call(portal, client)
        assert error is None, error
        # The client refreshed (same grant, rotated token) instead of starting over.
        assert portal.hits("POST", "/register") == 1
        assert portal.hits("GET", "/authorize") == 1
        assert portal.hits("POST", "/token", 200) == 2
        assert new != old
        assert store.token_state(old) == "rotated"
        assert store.token_state(new) == "active"
        # One active token in the whole store: the successor of `old`, in the same family.
        assert [t["grant_id"] for t in store.rpc("token.list", {})["items"]] == [grant_of(store, new)["grant_id"]]
    env.run(scenario())


# 4 ------------------------------------------------------------------------------------------

def test_4_kill_authstore_after_rotation(env, client_kind):
    async def scenario():
        store = env.authstore()
        portal = env.portal(store.ws_url, access_ttl=ACCESS_TTL)
        client = env.client(client_kind, portal)
        await client.call_tool("add", {"a": 1, "b": 1})
        previous = await client.refresh_token()
        await expire_access_token()
        await client.call_tool("add", {"a": 1, "b": 1})  # refreshes: `previous` is rotated
        latest = await client.refresh_token()
        assert latest != previous
        meta = grant_of(store, latest)

        store.proc.kill9()
        store.proc.start()  # same data directory

        r = token_request(portal.base, {"grant_type": "refresh_token", "refresh_token": latest,
                                        "client_id": meta["client_id"]})
        assert r.status_code == 200, r.text
        newest = r.json()
        r = token_request(portal.base, {"grant_type": "refresh_token", "refresh_token": previous,
                                        "client_id": meta["client_id"]})
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
        assert store.active_tokens(meta["grant_id"]) == []
        assert store.token_state(newest["refresh_token"]) == "revoked"
        # The resource server heard of the revocation: the newest access token is refused.
        headers = {"Authorization": f"Bearer {newest['access_token']}", "Accept": "application/json, text/event-stream"}
        assert await wait_for(lambda: httpx.post(portal.resource, headers=headers, json={}).status_code == 401)
    env.run(scenario())


# 5 ------------------------------------------------------------------------------------------

def test_5_replayed_code_and_refresh_token(env, client_kind):
    async def scenario():
        store = env.authstore()
        portal = env.portal(store.ws_url, access_ttl=ACCESS_TTL)
        client = env.client(client_kind, portal)
        await client.call_tool("add", {"a": 1, "b": 1})
        code = env.browser.last_callback["code"]
        meta = grant_of(store, await client.refresh_token())

        # A spent code, replayed: refused, and the grant it minted is revoked.
        r = token_request(portal.base, {"grant_type": "authorization_code", "code": code,
                                        "redirect_uri": CALLBACK, "code_verifier": "x" * 43,
                                        "client_id": meta["client_id"]})
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
        assert store.active_tokens(meta["grant_id"]) == []
        await asyncio.sleep(0.5)  # the revocation event reaches the resource server
        authorized = portal.hits("GET", "/authorize")
        assert await client.call_tool("add", {"a": 2, "b": 2}) == "4"
        assert portal.hits("GET", "/authorize") == authorized + 1  # had to authorize again

        # An old refresh token, replayed after its rotation: the family is revoked.
        stolen = await client.refresh_token()
        meta = grant_of(store, stolen)
        r = token_request(portal.base, {"grant_type": "refresh_token", "refresh_token": stolen,
                                        "client_id": meta["client_id"]})
        assert r.status_code == 200, r.text
        successor = r.json()["refresh_token"]
        r = token_request(portal.base, {"grant_type": "refresh_token", "refresh_token": stolen,
                                        "client_id": meta["client_id"]})
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
        assert store.active_tokens(meta["grant_id"]) == []
        assert store.token_state(successor) == "revoked"
        await asyncio.sleep(0.5)
        authorized = portal.hits("GET", "/authorize")
        assert await client.call_tool("add", {"a": 3, "b": 3}) == "6"
        assert portal.hits("GET", "/authorize") == authorized + 1
    env.run(scenario())


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def test_5_raw_http_confidential_client_and_pkce(env):
    """Raw HTTP: a confidential client's secret is checked by authstore; a wrong PKCE
    verifier burns the code; an unregistered redirect URI is never redirected to."""
    async def scenario():
        store = env.authstore()
        portal = env.portal(store.ws_url)
        reg = httpx.post(f"{portal.base}/register", json={
            "redirect_uris": [CALLBACK], "token_endpoint_auth_method": "client_secret_basic",
            "grant_types": ["authorization_code", "refresh_token"], "client_name": "raw"}).json()
        cid, secret = reg["client_id"], reg["client_secret"]

        async def code_for(challenge: str) -> str:
            q = {"response_type": "code", "client_id": cid, "redirect_uri": CALLBACK, "state": "s1",
                 "code_challenge": challenge, "code_challenge_method": "S256", "resource": portal.resource}
            await env.browser.authorize(f"{portal.base}/authorize?{urlencode(q)}")
            assert env.browser.last_callback["iss"] == portal.issuer
            assert env.browser.last_callback["state"] == "s1"
            return env.browser.last_callback["code"]

        verifier, challenge = pkce()
        code = await code_for(challenge)
        exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK,
                    "code_verifier": verifier}
        r = token_request(portal.base, exchange, auth=(cid, "wrong-secret"))
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
        r = token_request(portal.base, {**exchange, "code_verifier": pkce()[0]}, auth=(cid, secret))
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
        r = token_request(portal.base, exchange, auth=(cid, secret))  # burned by the failed attempt
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"

        verifier, challenge = pkce()
        code = await code_for(challenge)
        r = token_request(portal.base, {**exchange, "code": code, "code_verifier": verifier}, auth=(cid, secret))
        assert r.status_code == 200, r.text
        refresh = r.json()["refresh_token"]
        r = httpx.post(f"{portal.base}/revoke", data={"token": refresh}, auth=(cid, secret))
        assert r.status_code == 200
        assert store.token_state(refresh) == "revoked"

        q = {"response_type": "code", "client_id": cid, "redirect_uri": "http://127.0.0.1:1/evil",
             "code_challenge": challenge}
        r = httpx.get(f"{portal.base}/authorize?{urlencode(q)}")
        assert r.status_code == 400 and "location" not in r.headers
    env.run(scenario())


# 6 ------------------------------------------------------------------------------------------

def test_6_two_instances_and_cut_connection(env, client_kind):
    async def scenario():
        store = env.authstore()
        proxy = env.proxy(store.ws_url)
        a = env.portal(proxy.url, name="a", access_ttl=ACCESS_TTL)
        b = env.portal(store.ws_url, name="b", issuer=a.issuer, resource=a.resource,
                       with_resource_server=False, access_ttl=ACCESS_TTL)
        # The flow starts on instance a; consent happens on b; the code is redeemed on a,
        # and the portal's socket to authstore dies while code.consume is answered.
        env.browser.before_consent = once(lambda url: url.replace(a.base, b.base))
        proxy.cut_after("code.consume")
        client = env.client(client_kind, a)
        assert await client.call_tool("add", {"a": 5, "b": 5}) == "10"
        assert proxy.cuts == ["code.consume"]
        assert a.hits("GET", "/authorize") == 1 and b.hits("GET", "/consent", 302) == 1
        first = await client.refresh_token()
        meta = grant_of(store, first)
        assert len(store.active_tokens(meta["grant_id"])) == 1

        proxy.cut_after("token.rotate")
        await expire_access_token()
        assert await client.call_tool("add", {"a": 6, "b": 6}) == "12"
        assert proxy.cuts == ["code.consume", "token.rotate"]
        second = await client.refresh_token()
        assert second != first and store.token_state(second) == "active"
        assert store.token_state(first) == "rotated"  # rotated once, not reused
        assert len(store.active_tokens(meta["grant_id"])) == 1
        assert a.hits("GET", "/authorize") == 1
    env.run(scenario())


def test_6_cut_during_a_read_is_retried(env):
    """Raw HTTP: the socket dies while authstore answers a read (client.get in /authorize);
    the portal reconnects and asks again, and the user never notices."""
    async def scenario():
        store = env.authstore()
        proxy = env.proxy(store.ws_url)
        portal = env.portal(proxy.url, with_resource_server=False)
        cid = httpx.post(f"{portal.base}/register", json={
            "redirect_uris": [CALLBACK], "token_endpoint_auth_method": "none"}).json()["client_id"]
        proxy.cut_after("client.get")
        q = {"response_type": "code", "client_id": cid, "redirect_uri": CALLBACK, "code_challenge": pkce()[1]}
        r = httpx.get(f"{portal.base}/authorize?{urlencode(q)}")
        assert r.status_code == 302 and r.headers["location"].startswith("/consent?"), r.text
        assert proxy.cuts == ["client.get"]
    env.run(scenario())


# 7 ------------------------------------------------------------------------------------------

def test_7_control_memory_store_logs_everyone_out(env, client_kind):
    async def scenario():
        portal = env.portal(None, access_ttl=ACCESS_TTL)
        client = env.client(client_kind, portal)
        _, _, error = await deploy_then_call(portal, client)
        refused = portal.hits("POST", "/token", 400) + portal.hits("POST", "/token", 401)
        assert refused >= 1, "the refresh after the deploy should have been refused"
        started_over = portal.hits("POST", "/register") > 1 or portal.hits("GET", "/authorize") > 1
        assert error is not None or started_over, "the client should have had to start over"
    env.run(scenario())


# client ID metadata documents ---------------------------------------------------------------

def test_client_id_metadata_document(env, client_kind):
    """The client's id is the https URL of its metadata document: no registration; the portal
    fetches the document once and caches it in authstore (client.cache_document)."""
    async def scenario():
        docs = DocumentServer(env.workdir, CALLBACK)
        try:
            store = env.authstore()
            portal = env.portal(store.ws_url, access_ttl=ACCESS_TTL,
                                extra_args=("--client-document-ca", str(docs.cert_file)))
            client = env.client(client_kind, portal, metadata_url=docs.url)
            assert (await client.call_tool("whoami", {})).endswith(f"client={docs.url}")
            assert portal.hits("POST", "/register") == 0
            assert docs.fetches == 1
            cached = store.rpc("client.get", {"client_id": docs.url})
            assert cached["document_stale"] is False and cached["redirect_uris"] == [CALLBACK]
            portal.restart()
            await expire_access_token()
            assert await client.call_tool("add", {"a": 1, "b": 1}) == "2"  # refreshed
            assert docs.fetches == 1 and portal.hits("GET", "/authorize") == 1
        finally:
            docs.close()
    env.run(scenario())


# 8 ------------------------------------------------------------------------------------------

MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


def call_resource(portal, access_token: str) -> int:
    """The resource server's status for one MCP request carrying `access_token`."""
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    return httpx.post(portal.resource, json=ping, timeout=15,
                      headers={**MCP_HEADERS, "Authorization": f"Bearer {access_token}"}).status_code


async def raw_flow(env, portal, cid: str, auth: tuple[str, str] | None = None, **q) -> dict:
    """/authorize, consent and the code exchange over raw HTTP; the token response."""
    verifier, challenge = pkce()
    query = {"response_type": "code", "client_id": cid, "redirect_uri": CALLBACK,
             "code_challenge": challenge, "code_challenge_method": "S256", **q}
    await env.browser.authorize(f"{portal.base}/authorize?{urlencode(query)}")
    data = {"grant_type": "authorization_code", "code": env.browser.last_callback["code"],
            "redirect_uri": CALLBACK, "code_verifier": verifier}
    r = token_request(portal.base, data if auth else {**data, "client_id": cid}, auth=auth)
    assert r.status_code == 200, r.text
    return r.json()


def register(portal, **meta) -> dict:
    r = httpx.post(f"{portal.base}/register", json={"redirect_uris": [CALLBACK], **meta})
    assert r.status_code == 201, r.text
    return r.json()


def test_8_superseded_refresh_token_keeps_the_grant(env):
    """A repeated token.issue into a grant (what a retry without idempotency key does) ends
    the first refresh token with a `revoked` event of reason `superseded`; the family lives
    on, so its access tokens stay good. A revocation of the family ends them."""
    async def scenario():
        store = env.authstore()
        portal = env.portal(store.ws_url, access_ttl=60)
        cid = register(portal, token_endpoint_auth_method="none",
                       grant_types=["authorization_code", "refresh_token"])["client_id"]
        tokens = await raw_flow(env, portal, cid)
        assert call_resource(portal, tokens["access_token"]) == 200
        meta = grant_of(store, tokens["refresh_token"])
        again = store.rpc("token.issue", {"client_id": cid, "user_id": meta["user_id"],
                                          "grant_id": meta["grant_id"], "scope": meta["scope"],
                                          "resource": meta["resource"]})
        assert store.token_state(tokens["refresh_token"]) == "revoked"
        assert store.token_state(again["token"]) == "active"
        await asyncio.sleep(1)  # the `superseded` event reaches the resource server
        assert call_resource(portal, tokens["access_token"]) == 200
        # The control: revoking the family (reason `requested`) does end the access token.
        assert store.rpc("token.revoke", {"grant_id": meta["grant_id"]})["revoked"] == 1
        assert await wait_for(lambda: call_resource(portal, tokens["access_token"]) == 401)
    env.run(scenario())


def test_8_client_without_refresh_token(env):
    """A client registered without `refresh_token` gets no refresh token, so authstore holds
    nothing for its grant: its access token, minted after the resource server subscribed to
    revocations, is accepted without a lookup. After a restart of the resource server an
    older token is looked up and refused (the documented limitation)."""
    async def scenario():
        store = env.authstore()
        portal = env.portal(store.ws_url, access_ttl=60, rs_args=("--clock-skew", "0"))
        await asyncio.sleep(1.5)  # `iat` is whole seconds: be a second past the subscription
        cid = register(portal, token_endpoint_auth_method="none",
                       grant_types=["authorization_code"])["client_id"]
        tokens = await raw_flow(env, portal, cid)
        assert "refresh_token" not in tokens
        assert call_resource(portal, tokens["access_token"]) == 200
        # Its grant has no refresh token to rotate.
        r = token_request(portal.base, {"grant_type": "refresh_token", "refresh_token": "x" * 43,
                                        "client_id": cid})
        assert r.status_code == 400 and r.json()["error"] == "unauthorized_client", r.text
        portal.rs.restart()
        assert call_resource(portal, tokens["access_token"]) == 401
    env.run(scenario())


def test_8_raw_http_client_metadata_checks(env):
    """Raw HTTP: the registered authentication method, grant types and redirect URIs are
    enforced; a refresh token can be revoked only by its own client; a client ID metadata
    document on a private address is never fetched."""
    async def scenario():
        docs = DocumentServer(env.workdir, CALLBACK)
        try:
            store = env.authstore()
            portal = env.portal(store.ws_url, with_resource_server=False)
            basic = register(portal, token_endpoint_auth_method="client_secret_basic",
                             grant_types=["authorization_code", "refresh_token"])
            post = register(portal, token_endpoint_auth_method="client_secret_post",
                            grant_types=["authorization_code", "refresh_token"])
            public = register(portal, token_endpoint_auth_method="none",
                              grant_types=["authorization_code", "refresh_token"])

            # Each client authenticates the way it registered, and no other way.
            tokens = await raw_flow(env, portal, basic["client_id"], auth=(basic["client_id"], basic["client_secret"]))
            refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
            r = token_request(portal.base, {**refresh, "client_id": basic["client_id"],
                                            "client_secret": basic["client_secret"]})
            assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
            r = token_request(portal.base, {**refresh, "client_id": basic["client_id"]})
            assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
            assert store.token_state(tokens["refresh_token"]) == "active"  # never reached token.rotate
            r = token_request(portal.base, {"grant_type": "refresh_token", "refresh_token": "x" * 43},
                              auth=(post["client_id"], post["client_secret"]))
            assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
            r = token_request(portal.base, {"grant_type": "refresh_token", "refresh_token": "x" * 43,
                                            "client_id": post["client_id"], "client_secret": post["client_secret"]})
            assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text

            # Another client's refresh token: refused (RFC 7009 §2.1), and still active.
            r = httpx.post(f"{portal.base}/revoke", data={"token": tokens["refresh_token"],
                                                          "client_id": public["client_id"]})
            assert r.status_code == 400 and r.json()["error"] == "unauthorized_client", r.text
            r = httpx.post(f"{portal.base}/revoke", data={"token": tokens["access_token"],
                                                          "client_id": public["client_id"]})
            assert r.status_code == 400 and r.json()["error"] == "unauthorized_client", r.text
            assert store.token_state(tokens["refresh_token"]) == "active"
            r = httpx.post(f"{portal.base}/revoke", data={"token": tokens["refresh_token"]},
                           auth=(basic["client_id"], basic["client_secret"]))
            assert r.status_code == 200 and store.token_state(tokens["refresh_token"]) == "revoked"

            # Several redirect URIs: the request must name one.
            two = register(portal, token_endpoint_auth_method="none",
                           redirect_uris=[CALLBACK, CALLBACK + "2"])
            q = {"response_type": "code", "client_id": two["client_id"], "code_challenge": pkce()[1]}
            r = httpx.get(f"{portal.base}/authorize?{urlencode(q)}")
            assert r.status_code == 400 and "location" not in r.headers, r.text
            # One: it may be left out at /authorize and at /token alike.
            one = register(portal, token_endpoint_auth_method="none")
            verifier, challenge = pkce()
            q = {"response_type": "code", "client_id": one["client_id"], "code_challenge": challenge}
            await env.browser.authorize(f"{portal.base}/authorize?{urlencode(q)}")
            r = token_request(portal.base, {"grant_type": "authorization_code", "client_id": one["client_id"],
                                            "code": env.browser.last_callback["code"], "code_verifier": verifier})
            assert r.status_code == 200 and "refresh_token" not in r.json(), r.text

            # A metadata document on loopback: refused before any request is sent.
            q = {"response_type": "code", "client_id": docs.url, "redirect_uri": CALLBACK,
                 "code_challenge": pkce()[1]}
            r = httpx.get(f"{portal.base}/authorize?{urlencode(q)}")
            assert r.status_code == 400 and "location" not in r.headers, r.text
            assert docs.fetches == 0
        finally:
            docs.close()
    env.run(scenario())


# 9 ------------------------------------------------------------------------------------------

def test_9_resource_server_resubscribes_after_a_restore(env):
    """authstore comes back on older data (a snapshot restore; here an empty database): the
    resource server's cursor is ahead of the log (-32602 `since`). It drops what it believed
    live, subscribes again from the new head, and hears the next revocation."""
    async def scenario():
        store = env.authstore()
        portal = env.portal(store.ws_url, access_ttl=60, rs_args=("--clock-skew", "0"))
        cid = register(portal, token_endpoint_auth_method="none",
                       grant_types=["authorization_code", "refresh_token"])["client_id"]
        tokens = await raw_flow(env, portal, cid)
        grant = grant_of(store, tokens["refresh_token"])["grant_id"]
        store.rpc("token.revoke", {"grant_id": grant})  # the resource server's cursor moves on
        assert await wait_for(lambda: call_resource(portal, tokens["access_token"]) == 401)

        store.proc.stop()
        (env.workdir / "authstore-data").rename(env.workdir / "authstore-data.before-restore")
        store.proc.start()
        assert await wait_for(lambda: "restarting from head" in portal.rs.log.read_text(), 20)
        await asyncio.sleep(1.1)  # `iat` is whole seconds

        cid = register(portal, token_endpoint_auth_method="none",
                       grant_types=["authorization_code", "refresh_token"])["client_id"]
        tokens = await raw_flow(env, portal, cid)
        assert call_resource(portal, tokens["access_token"]) == 200
        store.rpc("token.revoke", {"grant_id": grant_of(store, tokens["refresh_token"])["grant_id"]})
        assert await wait_for(lambda: call_resource(portal, tokens["access_token"]) == 401)
    env.run(scenario())
