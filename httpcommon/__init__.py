"""HTTP conventions shared by the gateway's data plane and the router's admin API.

`errors` holds the one list of error codes and the one renderer; `auth` the one
`Authorization: Bearer` parser. Imports nothing from `gateway/` or `router/`.
"""
