import asyncio, sys, uvloop
from granian.constants import HTTPModes, Interfaces
from granian.server.embed import Server
from rsgi_srv import app
async def main(port):
    s = Server(app, address="127.0.0.1", port=port, interface=Interfaces.RSGI, http=HTTPModes.http1,
               websockets=False, backlog=4096, runtime_threads=1, log_enabled=False, log_access=False)
    await s.serve()
uvloop.run(main(int(sys.argv[1])))
