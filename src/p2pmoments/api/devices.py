"""The control API's devices (spec/devices.md, spec/openapi.yaml): list, link, rename,
revoke."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from p2pmoments import qr
from p2pmoments.api.base import API_PREFIX, NODE, ApiError, fields, json_body, node_errors
from p2pmoments.friends import identity_text

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get(f"{API_PREFIX}/devices")
async def devices(request: web.Request) -> web.Response:
    """This person's devices: which is this one, their names, which are linked now."""
    node = request.app[NODE]
    answer: dict[str, Any] = {
        "person": identity_text(node.person),
        "devices": node.devices.devices(),
        "requests": node.devices.joins.requests(),
    }
    code = node.devices.joining_code()
    if code is not None:  # this device waits for its person to confirm this code
        answer["joining"] = {"code": code}
    return web.json_response(answer)


@routes.post(f"{API_PREFIX}/devices/link")
async def new_device_link(request: web.Request) -> web.Response:
    """A single-use link for a new device of ours (spec/devices.md section 10); the device
    that uses it waits for the person to confirm its code, unless confirm is false."""
    body = {}
    if request.can_read_body:
        body = fields(await json_body(request), {"confirm": bool}, ())
    with node_errors():
        link, expires = request.app[NODE].devices.new_device_link(confirm=body.get("confirm", True))
    svg = await asyncio.to_thread(qr.render_svg, link)
    return web.json_response({"link": link, "expires_at": expires, "svg": svg.decode()}, status=201)


@routes.post(f"{API_PREFIX}/devices/requests/{{code}}")
async def confirm_join(request: web.Request) -> web.Response:
    """The person checked that the device waiting with this code shows it: link it."""
    if request.can_read_body:
        fields(await json_body(request), {}, ())
    node = request.app[NODE]
    with node_errors():
        name = await node.devices.confirm(request.match_info["code"])
    return web.json_response({"linked": name, "devices": node.devices.devices()})


@routes.delete(f"{API_PREFIX}/devices/requests/{{code}}")
async def refuse_join(request: web.Request) -> web.Response:
    """Refuse the device waiting with this code (it is not the one meant)."""
    node = request.app[NODE]
    with node_errors():
        refused = node.devices.joins.pop(request.match_info["code"])
    node.links.drop(refused.device, "refused by the person")
    return web.json_response({"refused": refused.name})


@routes.patch(f"{API_PREFIX}/devices/{{ref}}")
async def rename_device(request: web.Request) -> web.Response:
    """Rename one of our devices (by name or key prefix)."""
    body = fields(await json_body(request), {"name": str}, ("name",))
    node = request.app[NODE]
    with node_errors():
        await node.devices.rename(request.match_info["ref"], body["name"])
    return web.json_response(
        {"person": identity_text(node.person), "devices": node.devices.devices()}
    )


@routes.post(f"{API_PREFIX}/devices/{{ref}}/revoke")
async def revoke_device(request: web.Request) -> web.Response:
    """Revoke one of our devices: it gets nothing new, what it signs from now on is not ours."""
    if request.can_read_body:
        fields(await json_body(request), {}, ())
    node = request.app[NODE]
    with node_errors():
        name = await node.devices.revoke(request.match_info["ref"])
    return web.json_response({"revoked": name, "devices": node.devices.devices()})


@routes.get(f"{API_PREFIX}/recovery")
async def recovery_status(request: web.Request) -> web.Response:
    """Whether the person has a recovery sheet; on a recovered device, how far it is."""
    return web.json_response(request.app[NODE].recovery.status())


@routes.post(f"{API_PREFIX}/recovery")
async def make_recovery_sheet(request: web.Request) -> web.Response:
    """Make the person's recovery sheet (once; spec/devices.md section 5.2)."""
    if request.can_read_body:
        fields(await json_body(request), {}, ())
    with node_errors():
        sheet = await request.app[NODE].recovery.make_sheet()
    return web.json_response(sheet, status=201)


@routes.post(f"{API_PREFIX}/recovery/revoke")
async def revoke_lost_devices(request: web.Request) -> web.Response:
    """On a device recovered from a sheet: revoke the lost devices with the recovery key
    (those named, or every other one), which ends the recovery."""
    body = {}
    if request.can_read_body:
        body = fields(await json_body(request), {"devices": list}, ())
    devices = body.get("devices")
    if devices is not None and (len(devices) > 16 or not devices):
        raise ApiError(400, "bad_request", "devices names 1 to 16 devices")
    node = request.app[NODE]
    with node_errors():
        revoked = await node.recovery.revoke(devices)
    return web.json_response({"revoked": revoked, "devices": node.devices.devices()})
