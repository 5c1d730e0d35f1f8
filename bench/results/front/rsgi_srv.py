"""Scratch: granian RSGI echo (the same work), one worker, uvloop."""
import asyncio, orjson
async def app(scope, proto):
    body = await proto()
    doc = orjson.loads(body)
    await asyncio.sleep(0)
    out = orjson.dumps({"ok": len(doc)})
    proto.response_bytes(200, [("content-type", "application/json")], out)
