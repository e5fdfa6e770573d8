"""STOMP over WebSocket (``/stomp`` on the node's HTTP port): one STOMP frame stream per socket.

Subprotocols ``v12.stomp``, ``v11.stomp``, ``v10.stomp``. Text and binary messages
are both fed to the parser as bytes (a frame may span messages; several frames may
share one); frames go out as text when their bytes are UTF-8, else as binary.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import WSMsgType, web

from .server import Server

SUBPROTOCOLS = ("v12.stomp", "v11.stomp", "v10.stomp")


async def serve_websocket(request: web.Request, server: Server) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=SUBPROTOCOLS, heartbeat=None, max_msg_size=server.max_frame_size)
    await ws.prepare(request)

    async def send(data: bytes) -> None:
        try:
            await ws.send_str(data.decode())
        except UnicodeDecodeError:
            await ws.send_bytes(data)

    closing: set[asyncio.Task[bool]] = set()

    def close() -> None:  # e.g. after an ERROR frame or a missed heart-beat: ends the loop below
        if not ws.closed:
            t = asyncio.get_running_loop().create_task(ws.close())
            closing.add(t)
            t.add_done_callback(closing.discard)

    session = server.new_session(send, close)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await session.data_received(msg.data.encode())
            elif msg.type == WSMsgType.BINARY:
                await session.data_received(msg.data)
            else:
                break
            if session.closed:
                break
    finally:
        await session.connection_lost()
        with contextlib.suppress(Exception):
            await ws.close()
    return ws
