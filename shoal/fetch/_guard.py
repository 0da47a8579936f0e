"""SSRF guard: refuse non-public addresses at the moment of connecting.

The check lives in the resolver (``GuardedResolver``, aiohttp's resolver interface), so the
addresses the transport dials are exactly the addresses that were checked: no second lookup a
DNS-rebinding host could answer differently. The transport never resolves literal IPs, so the
engine checks those itself (``AddressPolicy.check_literal``) on every hop, like a redirect
target. The policy itself (private ranges, metadata addresses, the operator's allow-list) is
``_policy``.
"""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult

from ._policy import AddressPolicy, parse_address


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` and refuses (``BlockedAddress``) what the policy does not allow.

    This is the resolver of the engine's direct transport, which caches its answers per host
    for a minute, so a checked answer is also the one reused.
    """

    def __init__(self, inner: AbstractResolver, policy: AddressPolicy) -> None:
        self._inner = inner
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not results:
            raise socket.gaierror(socket.EAI_NONAME, f"no addresses for {host!r}")
        self._policy.check(host, (parse_address(r["host"]) for r in results))
        return results

    async def close(self) -> None:
        await self._inner.close()
