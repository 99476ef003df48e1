"""The control API (spec/openapi.yaml): aiohttp, loopback only, bearer token or a web
app session.

- `base`: keys, limits, the JSON error, the error table, checks of what comes in;
- `guards`: the middlewares (errors, Host, Origin, auth) and `ApiRunner`;
- `uploads`: multipart posts; `routes`: the endpoints, `unread` those of read marks,
  `gallery` those of a circle's photos, `pictures` those of profile pictures;
  the web app is webapp.py.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from p2pmoments import webapp
from p2pmoments.api import chats, gallery, notes, pictures, unread
from p2pmoments.api.base import (
    API_PREFIX,
    MAX_PHOTO,
    MAX_UPLOADS,
    NODE,
    READING,
    TOKEN,
    UPLOADS,
    WEB_GATE,
    ApiError,
    WebGate,
    has_bearer,
    loopback_authority,
)
from p2pmoments.api.devices import routes as device_routes
from p2pmoments.api.guards import MIDDLEWARES, ApiRunner
from p2pmoments.api.routes import routes
from p2pmoments.api.versions import routes as version_routes
from p2pmoments.node import Node
from p2pmoments.notes import Notes
from p2pmoments.reading import Reading
from p2pmoments.receipts import ReadReceipts

__all__ = [
    "API_PREFIX",
    "NODE",
    "TOKEN",
    "WEB_GATE",
    "ApiError",
    "ApiRunner",
    "WebGate",
    "create_app",
    "has_bearer",
    "loopback_authority",
]


def create_app(node: Node, token: str) -> web.Application:
    """The control API application for `node`, guarded by `token`."""
    app = web.Application(middlewares=list(MIDDLEWARES), client_max_size=MAX_PHOTO)
    app[NODE] = node
    app[TOKEN] = token
    app[UPLOADS] = asyncio.Semaphore(MAX_UPLOADS)
    # The person's own posts, from any of their devices, are never unread.
    app[READING] = Reading(
        node.store,
        node.events,
        node.circles,
        node.moments,
        lambda author: node.friends.person(author).identity == node.person,
    )
    # Read receipts go out as the person reads a conversation, if they allow it.
    app[chats.RECEIPTS] = ReadReceipts(node.store, node.posting, node.circles.device)
    app[READING].on_read = app[chats.RECEIPTS].read
    app.add_routes(routes)
    app.add_routes(device_routes)
    app.add_routes(unread.routes)
    app.add_routes(version_routes)
    notes.setup(
        app,
        Notes(
            node.store,
            node.moments,
            node.posting,
            node.circles,
            node.events,
            lambda key: node.friends.person(key).identity,
        ),
        node.friends.person,
    )
    app.add_routes(chats.routes)
    app.add_routes(gallery.routes)
    app.add_routes(pictures.routes)
    webapp.setup(app)
    return app
