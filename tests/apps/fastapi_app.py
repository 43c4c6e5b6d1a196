"""A small FastAPI app: routes, JSON, streaming, uploads and lifespan."""

import hashlib
import logging
from contextlib import asynccontextmanager
from typing import Optional

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

log = logging.getLogger("fastapi_app")


@asynccontextmanager
async def lifespan(app):
    log.warning("fastapi startup")
    yield {"db": "connected"}
    log.warning("fastapi shutdown")


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: Optional[str] = None):
    return {"item_id": item_id, "q": q}


@app.post("/items")
async def create_item(item: Item):
    return {"name": item.name, "total": item.price * 2, "tags": item.tags}


@app.get("/state")
async def state(request: Request):
    return {"db": request.state.db, "root_path": request.scope.get("root_path")}


@app.get("/stream")
async def stream():
    async def gen():
        for i in range(50):
            yield b"line %d\n" % i
    return StreamingResponse(gen(), media_type="text/plain")


@app.post("/upload")
async def upload(request: Request):
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


@app.websocket("/ws")
async def ws_echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_json({"echo": text})
    except WebSocketDisconnect as e:
        log.warning("fastapi ws closed %s", e.code)
