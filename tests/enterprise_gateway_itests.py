"""Enterprise Gateway's own integration tests (``enterprise_gateway.itests``, its client
``enterprise_gateway.client.gateway_client``) run against a kernel service: a script that
tests/test_enterprise_gateway.py runs in a process of its own.

Enterprise Gateway takes the user's name from the request (``KERNEL_USERNAME`` in the start
request's ``env``); the service never does: a user is who their token says. So the one thing this
script adds to Enterprise Gateway's client is a token on each request and websocket, chosen by the
name the client claims: ``JGC_EG_TOKENS`` maps names to tokens (JSON). A kernel's later requests
(interrupt, restart, its websocket, shutdown) carry the token it was started with. Nothing else
of the client or the tests changes.

    python enterprise_gateway_itests.py TEST_ID...   (unittest ids, as ``python -m unittest``)
"""

from __future__ import annotations

import json
import os
import re
import sys
import unittest
from typing import Any

import requests
import websocket

TOKENS: dict[str, str] = json.loads(os.environ["JGC_EG_TOKENS"])
DEFAULT_USER = os.environ.get("KERNEL_USERNAME", "bob")
KERNEL_PATH = re.compile(r"/api/kernels/([0-9a-f-]{36})")
token_of_kernel: dict[str, str] = {}

original_request = requests.Session.request
original_create_connection = websocket.create_connection


def claimed_user(data: Any) -> str:
    """The name a start request claims (Enterprise Gateway's ``KERNEL_USERNAME``)."""
    try:
        env = json.loads(data).get("env") or {}
    except (TypeError, ValueError):
        return DEFAULT_USER
    return str(env.get("KERNEL_USERNAME") or DEFAULT_USER)


def request_with_token(
    self: requests.Session, method: str, url: str, *args: Any, **kwargs: Any
) -> requests.Response:
    kernel = KERNEL_PATH.search(url)
    if kernel:
        token = token_of_kernel.get(kernel.group(1), TOKENS[DEFAULT_USER])
    else:
        token = TOKENS[claimed_user(kwargs.get("data"))]
    kwargs["headers"] = {**(kwargs.get("headers") or {}), "Authorization": f"token {token}"}
    response = original_request(self, method, url, *args, **kwargs)
    if method.upper() == "POST" and not kernel and response.status_code == 201:
        token_of_kernel[response.json()["id"]] = token
    return response


def create_connection_with_token(url: str, *args: Any, **kwargs: Any) -> Any:
    kernel = KERNEL_PATH.search(url)
    token = token_of_kernel.get(kernel.group(1) if kernel else "", TOKENS[DEFAULT_USER])
    kwargs["header"] = [*(kwargs.get("header") or []), f"Authorization: token {token}"]
    return original_create_connection(url, *args, **kwargs)


requests.Session.request = request_with_token  # type: ignore[method-assign]
websocket.create_connection = create_connection_with_token

if __name__ == "__main__":
    unittest.main(module=None, argv=[sys.argv[0], "-v", *sys.argv[1:]])
