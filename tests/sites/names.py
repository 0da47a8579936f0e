"""A resolver for tests: names from a table, never DNS.

    resolver = MapResolver({"dual.test": ["::1", "127.0.0.1"]})
    Engine(..., resolver=resolver)   # the engine wraps it in its guard
    resolver.asked                   # the names it was asked for, in order

Answers come in the table's order (so a test decides which address is first); a name not in
the table is ``socket.gaierror`` (the engine's ``dns`` code).
"""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult


class MapResolver(AbstractResolver):
    """See the module docstring."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} not in the test table")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.table[host]
        ]

    async def close(self) -> None:
        pass
