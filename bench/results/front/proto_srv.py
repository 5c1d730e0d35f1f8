"""Scratch: a loop-native HTTP/1.1 front (asyncio Protocol + httptools) answering an orjson echo."""
import asyncio, sys, orjson, httptools, uvloop

class Req:
    __slots__ = ("url", "headers", "body")

class HttpProto(asyncio.Protocol):
    def __init__(self):
        self.parser = httptools.HttpRequestParser(self)
        self.cur = None
        self.transport = None
    def connection_made(self, t):
        self.transport = t
    def data_received(self, data):
        self.parser.feed_data(data)
    def on_message_begin(self):
        r = self.cur = Req(); r.headers = []; r.body = b""
    def on_url(self, url):
        self.cur.url = url
    def on_header(self, k, v):
        self.cur.headers.append((k, v))
    def on_body(self, b):
        self.cur.body += b
    def on_message_complete(self):
        asyncio.get_running_loop().create_task(self.handle(self.cur, self.parser.should_keep_alive()))
    async def handle(self, r, keep):
        doc = orjson.loads(r.body)
        await asyncio.sleep(0)
        out = orjson.dumps({"ok": len(doc)})
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(out), out))
        if not keep:
            self.transport.close()

async def main(port):
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(HttpProto, "127.0.0.1", port, backlog=2048)
    print("ready", flush=True)
    await srv.serve_forever()

uvloop.run(main(int(sys.argv[1])))
