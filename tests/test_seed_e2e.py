"""The 2009 tutorial's test, end to end: simulated Asterisk servers, real pbxmesh daemons, real
corosync. Each server's hint 1234 lists Custom:mystate and its remote counterpart."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from pbxmesh.links.ami.client import AmiClient, AmiConfig
from pbxmesh.links.ami.counterparts import counterpart_name
from tests.ami_helpers import SECRET, USER, start_sim, wait_until
from tests.harness.nodes import NodeProcess, node_group

pytestmark = pytest.mark.integration

HINT = f"Custom:mystate&{counterpart_name('Custom:mystate')}"
DIALPLAN = f"[devstate_test]\nexten => 1234,hint,{HINT}\n"


def with_asterisk(node: NodeProcess, ami_port: int) -> None:
    node.write_config()
    node.config_path.write_text(
        node.config_path.read_text()
        + f'[asterisk]\nami = "127.0.0.1:{ami_port}"\nusername = "{USER}"\n'
        f'secret = "{SECRET}"\n'
    )


@contextlib.asynccontextmanager
async def servers(n: int, group: str):
    sims = [await start_sim(DIALPLAN) for _ in range(n)]
    clients: list[AmiClient] = []
    names = [f"pbx{i + 1}" for i in range(n)]
    try:
        with node_group([(name, None) for name in names], group, base_port=20765) as nodes:
            for node, sim in zip(nodes, sims, strict=True):
                with_asterisk(node, sim.port)
                await asyncio.to_thread(node.start)
            for sim in sims:
                client = AmiClient(AmiConfig.local("127.0.0.1", sim.port, USER, SECRET))
                await client.start()
                async with asyncio.timeout(10):
                    await client.wait_connected()
                clients.append(client)
            await wait_until(
                lambda: all(len(nd.members()) == n for nd in nodes), 20, "every member"
            )
            yield nodes, clients
    finally:
        for client in clients:
            await client.close()
        for sim in sims:
            await sim.close()


async def hint_text(client: AmiClient) -> str:
    lines = await client.command("core show hints")
    (line,) = [ln for ln in lines if ln.startswith("1234@devstate_test")]
    return line


async def setvar(client: AmiClient, state: str) -> None:
    await client.action("Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value=state)


async def shows(client: AmiClient, text: str) -> bool:
    return f"State:{text} " in await hint_text(client)


@pytest.mark.parametrize("count", [2, 3])
async def test_the_tutorials_test_passes_on_every_server(count, corosync_loopback, corosync_group):
    async with servers(count, corosync_group) as (_nodes, clients):
        first, others = clients[0], clients[1:]
        for c in clients:
            assert await shows(c, "Idle")
        await setvar(first, "INUSE")
        for c in others:
            await wait_until(lambda c=c: shows(c, "InUse"), 10, "State:InUse elsewhere")
        assert await shows(first, "InUse")
        await setvar(first, "NOT_INUSE")
        for c in others:
            await wait_until(lambda c=c: shows(c, "Idle"), 10, "State:Idle elsewhere")

        # MWI 1000@default written on the first server lights the lamp on the others.
        await first.action("MWIUpdate", Mailbox="1000@default", NewMessages="2", OldMessages="1")

        async def counts(c: AmiClient) -> bool:
            r = await c.action("MailboxCount", Mailbox="1000@default")
            return (r.get("NewMessages"), r.get("OldMessages")) == ("2", "1")

        for c in others:
            await wait_until(lambda c=c: counts(c), 10, "MWI 1000@default elsewhere")

        # Aggregation across servers: BUSY here and RINGING there is RINGINUSE everywhere.
        await setvar(first, "BUSY")
        await setvar(others[0], "RINGING")
        for c in clients:
            await wait_until(lambda c=c: shows(c, "InUse&Ringing"), 10, "InUse&Ringing")


async def test_a_server_leaving_updates_the_others_hints(corosync_loopback, corosync_group):
    """Asterisk's own clustering leaves hints stale here; pbxmesh must not."""
    async with servers(3, corosync_group) as (nodes, clients):
        await setvar(clients[2], "BUSY")
        for c in clients[:2]:
            await wait_until(lambda c=c: shows(c, "Busy"), 10, "State:Busy")
        await asyncio.to_thread(nodes[2].kill)  # kill -9: no goodbye at all
        for c in clients[:2]:
            await wait_until(lambda c=c: shows(c, "Idle"), 10, "back to Idle")
        # The server comes back: its state (kept by its Asterisk) is shared again.
        await asyncio.to_thread(nodes[2].start)
        for c in clients[:2]:
            await wait_until(lambda c=c: shows(c, "Busy"), 20, "Busy again")
