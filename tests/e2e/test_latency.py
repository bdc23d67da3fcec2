"""Per-step latency through the portal, over raw HTTP from loopback: /authorize up to the
redirect carrying the code (two requests: authorize, then consent), the code exchange, and
one refresh. Median of E2E_LATENCY_RUNS runs, on authstore and, for reference, on the
in-memory control store. Printed at the end of the run."""

from __future__ import annotations

import os
import statistics
import time
from urllib.parse import urlencode

import httpx
import pytest

from conftest import LATENCY
from harness import CALLBACK
from test_scenarios import pkce

RUNS = int(os.environ.get("E2E_LATENCY_RUNS", "20"))


@pytest.mark.parametrize("store", ["authstore", "memory"])
def test_latency(env, store):
    async def measure():
        store_url = env.authstore().ws_url if store == "authstore" else None
        portal = env.portal(store_url)
        cid = httpx.post(f"{portal.base}/register", json={
            "redirect_uris": [CALLBACK], "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"]}).json()["client_id"]
        steps: dict[str, list[float]] = {"authorize": [], "token": [], "refresh": []}
        async with httpx.AsyncClient(timeout=30) as http:
            for _ in range(RUNS):
                verifier, challenge = pkce()
                q = {"response_type": "code", "client_id": cid, "redirect_uri": CALLBACK, "state": "s",
                     "code_challenge": challenge, "code_challenge_method": "S256"}
                t = time.perf_counter()
                await env.browser.authorize(f"{portal.base}/authorize?{urlencode(q)}")
                steps["authorize"].append(time.perf_counter() - t)
                code = env.browser.last_callback["code"]

                t = time.perf_counter()
                r = await http.post(f"{portal.base}/token", data={
                    "grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK,
                    "code_verifier": verifier, "client_id": cid})
                steps["token"].append(time.perf_counter() - t)
                assert r.status_code == 200, r.text

                t = time.perf_counter()
                r = await http.post(f"{portal.base}/token", data={
                    "grant_type": "refresh_token", "refresh_token": r.json()["refresh_token"], "client_id": cid})
                steps["refresh"].append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
        LATENCY[store] = {k: statistics.median(v) * 1000 for k, v in steps.items()} | {"runs": RUNS}

    env.run(measure())
