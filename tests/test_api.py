"""The control API: token, Host, Origin, JSON errors, and agreement with spec/openapi.yaml.

Every request made here passes through `spec_check`, which validates the request
and the response against the spec with openapi-core; a response the spec does
not describe fails the test.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_core import OpenAPI
from openapi_core.contrib.aiohttp import AIOHTTPOpenAPIWebRequest, AIOHTTPOpenAPIWebResponse
from openapi_core.validation.request.exceptions import SecurityValidationError
from openapi_schema_validator import validate

from p2pmoments.api import API_PREFIX, create_app
from p2pmoments.node import Node

SPEC_PATH = Path(__file__).parent.parent / "spec" / "openapi.yaml"
SPEC = OpenAPI.from_file_path(str(SPEC_PATH))
WEB_SPEC_PATH = SPEC_PATH.parent / "webapp.yaml"
WEB_SPEC = OpenAPI.from_file_path(str(WEB_SPEC_PATH))  # the app's pages, outside /api/v1
TOKEN = "t" * 43
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ERROR_SCHEMA = yaml.safe_load(SPEC_PATH.read_text())["components"]["schemas"]["Error"]


@web.middleware
async def spec_check(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Validate request and response against the spec (outermost, sees every answer)."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    if not isinstance(response, web.Response):  # a streamed photo or file: not JSON
        assert response.status in (200, 206)  # 206: a range of it
        return response
    try:
        _ = request.url
        describable = True
    except ValueError:  # a Host no URL can have (the API refuses it): only its shape is checked
        describable = False
    spec = SPEC if request.path.startswith(API_PREFIX + "/") else WEB_SPEC
    if describable and request.match_info.http_exception is None:  # the spec must describe it
        # After the handler, read() returns the body it consumed (aiohttp caches it).
        body = await request.read() if response.status < 400 else None
        if response.status < 400:
            try:
                spec.validate_request(AIOHTTPOpenAPIWebRequest(request, body=body))
            except SecurityValidationError:
                # The session cookie is named after the port, which OpenAPI cannot say;
                # tests/test_webapp.py checks how sessions get in.
                if not any(name.startswith("p2pm_session_") for name in request.cookies):
                    raise
        spec.validate_response(
            AIOHTTPOpenAPIWebRequest(request, body=body), AIOHTTPOpenAPIWebResponse(response)
        )
    else:
        # Paths and methods the spec does not list still answer with its Error shape.
        assert response.content_type == "application/json"
        assert isinstance(response.body, bytes)
        validate(json.loads(response.body), ERROR_SCHEMA)
    if isinstance(response, web.HTTPException):
        raise response
    return response


@pytest.fixture
async def client(
    node: Node, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(node, TOKEN)
    app.middlewares.insert(0, spec_check)
    return await aiohttp_client(app)


async def get(client: TestClient[Any, Any], path: str, **kwargs: Any) -> Any:
    return await client.get(API_PREFIX + path, **kwargs)


async def error_of(response: Any) -> dict[str, str]:
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"}
    return dict(body["error"])


# --- the token -------------------------------------------------------------


async def test_health_needs_no_token_and_says_nothing_else(client: TestClient[Any, Any]) -> None:
    response = await get(client, "/health")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": "Bearer"},
    ],
)
async def test_status_without_the_token_is_401(
    client: TestClient[Any, Any], headers: dict[str, str]
) -> None:
    response = await get(client, "/status", headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await error_of(response))["code"] == "unauthorized"


async def test_status_with_the_token(client: TestClient[Any, Any], node: Node) -> None:
    response = await get(client, "/status", headers=AUTH)
    assert response.status == 200
    status = await response.json()
    assert status["name"] == "Alice"
    assert status["identity"] == node.identity.public.text
    assert status["token_file"] == str(node.paths.token_file)
    assert status["listen"] == node.links.listen_addresses
    assert (status["friends"], status["circles"], status["moments"]) == (0, 0, 0)


# --- Host: DNS rebinding ----------------------------------------------------


@pytest.mark.parametrize("path", ["/health", "/status", "/profile", "/nowhere"])
@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:47471",
        "127.0.0.1.nip.io",
        "192.168.1.10:47471",
        "",
        "localhost.evil.example",
    ],
)
async def test_a_foreign_host_is_refused_everywhere(
    client: TestClient[Any, Any], path: str, host: str
) -> None:
    response = await get(client, path, headers={**AUTH, "Host": host})
    assert response.status == 403
    assert (await error_of(response))["code"] == "forbidden_host"


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:47471", "127.0.0.1:9", "127.5.6.7", "[::1]:47471", "LOCALHOST:1"],
)
async def test_loopback_hosts_are_accepted(client: TestClient[Any, Any], host: str) -> None:
    response = await get(client, "/status", headers={**AUTH, "Host": host})
    assert response.status == 200


# --- Origin: CSRF -----------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://localhost:3000"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
async def test_cross_origin_browser_requests_are_refused(
    client: TestClient[Any, Any], headers: dict[str, str]
) -> None:
    for path in ("/health", "/status"):
        response = await get(client, path, headers={**AUTH, **headers})
        assert response.status == 403
        assert (await error_of(response))["code"] == "forbidden_origin"
    patch = await client.patch(
        f"{API_PREFIX}/profile", json={"name": "Mallory"}, headers={**AUTH, **headers}
    )
    assert patch.status == 403
    assert (await (await get(client, "/profile", headers=AUTH)).json())["name"] == "Alice"


async def test_same_origin_browser_requests_are_accepted(client: TestClient[Any, Any]) -> None:
    host = f"127.0.0.1:{client.port}"
    response = await get(
        client,
        "/status",
        headers={**AUTH, "Host": host, "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"},
    )
    assert response.status == 200


# --- profile and errors -----------------------------------------------------


async def test_rename_is_visible_in_status(client: TestClient[Any, Any]) -> None:
    response = await client.patch(
        f"{API_PREFIX}/profile", json={"name": "  Alice B.  "}, headers=AUTH
    )
    assert response.status == 200
    assert (await response.json())["name"] == "Alice B."
    status = await (await get(client, "/status", headers=AUTH)).json()
    assert status["name"] == "Alice B."


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": ""}, "invalid_name"),
        ({"name": "x" * 33}, "invalid_name"),
        ({"name": "a\u0000b"}, "invalid_name"),
        ({"name": 5}, "invalid_name"),
        ({}, "bad_request"),
        ({"name": "A", "admin": True}, "bad_request"),
        ([], "bad_request"),
    ],
)
async def test_bad_profile_bodies_change_nothing(
    client: TestClient[Any, Any], body: Any, code: str
) -> None:
    response = await client.patch(f"{API_PREFIX}/profile", json=body, headers=AUTH)
    assert response.status == 400
    assert (await error_of(response))["code"] == code
    assert (await (await get(client, "/profile", headers=AUTH)).json())["name"] == "Alice"


async def test_malformed_json_and_wrong_type(client: TestClient[Any, Any]) -> None:
    bad_json = await client.patch(
        f"{API_PREFIX}/profile", data=b"{nope", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert bad_json.status == 400
    assert (await error_of(bad_json))["code"] == "bad_request"
    form = await client.patch(f"{API_PREFIX}/profile", data={"name": "x"}, headers=AUTH)
    assert form.status == 415
    assert (await error_of(form))["code"] == "unsupported_media_type"


async def test_oversized_body_is_refused(client: TestClient[Any, Any]) -> None:
    response = await client.patch(
        f"{API_PREFIX}/profile",
        data=b"{" + b" " * 70_000 + b"}",
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status == 413
    assert (await error_of(response))["code"] == "too_large"


async def test_unknown_path_and_method_get_json_errors(client: TestClient[Any, Any]) -> None:
    missing = await get(client, "/nowhere", headers=AUTH)
    assert missing.status == 404
    assert (await error_of(missing))["code"] == "not_found"
    wrong = await client.delete(f"{API_PREFIX}/status", headers=AUTH)
    assert wrong.status == 405
    assert (await error_of(wrong))["code"] == "method_not_allowed"
    assert "GET" in wrong.headers["Allow"]


async def test_unknown_paths_need_the_token_too(client: TestClient[Any, Any]) -> None:
    # Without the token, nothing reveals which paths exist.
    response = await get(client, "/nowhere")
    assert response.status == 401


# --- the spec and the served routes agree ------------------------------------


def test_served_operations_and_spec_operations_are_the_same(node: Node) -> None:
    app = create_app(node, TOKEN)
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = set()
    for spec_path in (SPEC_PATH, WEB_SPEC_PATH):
        spec = yaml.safe_load(spec_path.read_text())
        documented |= {
            (method, spec["servers"][0]["url"].rstrip("/") + path)
            for path, item in spec["paths"].items()
            for method in item
            if method in {"get", "put", "post", "patch", "delete"}
        }
    assert served == documented
    # The API's file describes the API alone: what a fuzzer reads of it is all /api/v1.
    assert yaml.safe_load(SPEC_PATH.read_text())["servers"][0]["url"] == API_PREFIX
    assert all(
        "servers" not in item for item in yaml.safe_load(SPEC_PATH.read_text())["paths"].values()
    )
