"""Redis URLs <-> Feast's Redis connection strings. Pure."""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["redis_url_to_feast", "feast_to_redis_url"]


def redis_url_to_feast(url: str) -> str:
    """``redis://[:pw@]host:port/db`` -> Feast's ``host:port,db=N[,password=..][,ssl=true]``."""
    u = urlsplit(url)
    if u.scheme not in ("redis", "rediss"):
        raise ValueError(f"not a redis:// URL: {url!r}")
    parts = [f"{u.hostname or '127.0.0.1'}:{u.port or 6379}"]
    db = (u.path or "/").strip("/") or "0"
    parts.append(f"db={int(db)}")
    if u.password:
        parts.append(f"password={u.password}")
    if u.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def feast_to_redis_url(conn: str) -> str:
    """Feast's single-node connection string -> a ``redis://`` URL (inverse of the above)."""
    items = [c.strip() for c in conn.split(",") if c.strip()]
    nodes = [c for c in items if "=" not in c]
    opts = dict(c.split("=", 1) for c in items if "=" in c)
    if len(nodes) != 1:
        raise ValueError(f"expected one host:port in {conn!r}")
    scheme = "rediss" if opts.get("ssl", "").lower() == "true" else "redis"
    auth = f":{opts['password']}@" if opts.get("password") else ""
    return f"{scheme}://{auth}{nodes[0]}/{int(opts.get('db', 0))}"
