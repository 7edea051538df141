"""Kept hints ([asterisk.hints]) on real Asterisk, every build: the AMI link adds a hint for
another server's extension, the hint's state follows the cluster, it comes back after
``dialplan reload``, an extension that has a hint of Asterisk's own is never touched, and the
hint goes when no server holds the device any more.

The remote devices here are ``Custom:ph{exten}`` devices reported through the link's port (as
the node reports another server's ``PJSIP/{exten}``): the hint's devices and state are the same
for any technology. A SIPp phone in a call on the other server is not part of these tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from pbxmesh.links.ami import AmiConfig, AmiLink, AmiLinkConfig
from pbxmesh.links.ami.client import AmiClient
from pbxmesh.links.ami.codec import Action
from pbxmesh.links.ami.hints import HintsConfig
from pbxmesh.presence import PresenceState
from pbxmesh.states import DeviceState
from tests.ami_helpers import THERE, FakeCluster, wait_until
from tests.harness.asterisk import AMI_SECRET, AMI_USER, Asterisk, Build, eid_of

pytestmark = [pytest.mark.asterisk, pytest.mark.integration]

CONTEXT = "ext-local-custom"
#: FreePBX's chain from the phones' context to ext-local-custom (tests/freepbx_helpers.py)
DIALPLAN = (
    "[from-internal]\ninclude => from-internal-xfer\n"
    "[from-internal-xfer]\ninclude => from-internal-additional\n"
    "[from-internal-additional]\ninclude => ext-local\n"
    "[ext-local]\ninclude => ext-local-custom\n"
    f"[{CONTEXT}]\nexten => 1000,hint,Custom:local\n"
)
HINTS = HintsConfig(context=CONTEXT, device="Custom:ph{exten}")


@pytest.fixture(scope="module")
def star(asterisk_build: Build, require_asterisk: None) -> Iterator[Asterisk]:
    ast = Asterisk("hints", eid_of(0x62), dialplan=DIALPLAN)
    try:
        ast.start()
        yield ast
    finally:
        ast.cleanup()


async def _linked(star: Asterisk, include: tuple[str, ...]) -> AsyncIterator[AmiLink]:
    link = AmiLink(
        AmiConfig("127.0.0.1", star.ami_port, AMI_USER, AMI_SECRET),
        AmiLinkConfig(include=include, hints=HINTS),
    )
    await link.start(FakeCluster())
    try:
        await link.client.wait_connected()
        await link.wait_idle()
        yield link
    finally:
        await link.close()


@pytest.fixture
async def link(star: Asterisk) -> AsyncIterator[AmiLink]:
    async for one in _linked(star, ("*",)):
        yield one


@pytest.fixture
async def probe(star: Asterisk) -> AsyncIterator[AmiClient]:
    async with AmiClient(AmiConfig("127.0.0.1", star.ami_port, AMI_USER, AMI_SECRET)) as client:
        await client.wait_connected()
        yield client


async def state_of(probe: AmiClient, exten: str, context: str = CONTEXT) -> tuple[str, str]:
    """ExtensionState of ``exten`` in ``context``: (hint, state text)."""
    answer = await probe.send_action(Action.of("ExtensionState", Exten=exten, Context=context))
    return answer.get("Hint") or "", answer.get("StatusText") or ""


async def test_a_remote_extension_gets_a_hint_that_follows_it(
    link: AmiLink, probe: AmiClient
) -> None:
    want = "Custom:ph2001&Custom:remote-Custom-ph2001"
    link.remote_device("Custom:ph2001", DeviceState.INUSE)
    await wait_until(lambda: _is(probe, "2001", (want, "InUse")), 2.0, "hint added, InUse")
    link.remote_device("Custom:ph2001", DeviceState.RINGING)
    await wait_until(lambda: _is(probe, "2001", (want, "Ringing")), 2.0, "state follows")
    # what a FreePBX phone (context from-internal) subscribing to 2001 is given
    assert await state_of(probe, "2001", "from-internal") == (want, "Ringing")
    kept = {(h.exten, h.kept) for h in await link.hints()}
    assert ("2001", True) in kept and ("1000", False) in kept
    link.remote_device("Custom:ph2001", DeviceState.INVALID)  # no other server holds it
    await wait_until(lambda: _is(probe, "2001", ("", "Unknown")), 2.0, "hint removed")


async def test_a_kept_hint_comes_back_after_dialplan_reload(
    link: AmiLink, probe: AmiClient, star: Asterisk
) -> None:
    want = "Custom:ph2002&Custom:remote-Custom-ph2002"
    link.remote_device("Custom:ph2002", DeviceState.BUSY)
    await wait_until(lambda: _is(probe, "2002", (want, "Busy")), 2.0, "hint added")
    assert "Dialplan reloaded" in (await probe.command("dialplan reload"))[0]
    assert (await state_of(probe, "2002"))[0] in ("", want)
    await wait_until(lambda: _is(probe, "2002", (want, "Busy")), 2.0, "hint back after reload")
    assert await state_of(probe, "1000") == ("Custom:local", "Idle")


async def test_a_hint_asterisk_has_is_never_replaced(link: AmiLink, probe: AmiClient) -> None:
    link.remote_device("Custom:ph1000", DeviceState.INUSE)
    link.remote_device("Custom:ph2003", DeviceState.INUSE)  # a kept one, to know it has run
    await wait_until(lambda: _kept(probe, "2003"), 2.0, "2003 added")
    assert await state_of(probe, "1000") == ("Custom:local", "Idle")
    assert not link.hint_keeper or not link.hint_keeper.is_kept("1000", CONTEXT)
    link.remote_device("Custom:ph1000", DeviceState.INVALID)
    link.remote_device("Custom:ph2003", DeviceState.INVALID)
    await wait_until(lambda: _is(probe, "2003", ("", "Unknown")), 2.0, "2003 removed")
    assert await state_of(probe, "1000") == ("Custom:local", "Idle")


async def test_custom_presence_is_added_when_the_presentity_exists(
    link: AmiLink, probe: AmiClient
) -> None:
    link.remote_presence("CustomPresence:2004", PresenceState.AWAY, "", "", THERE)
    link.remote_device("Custom:ph2004", DeviceState.NOT_INUSE)
    want = "Custom:ph2004&Custom:remote-Custom-ph2004,CustomPresence:2004"
    await wait_until(lambda: _is(probe, "2004", (want, "Idle")), 2.0, "hint with presence")
    link.remote_device("Custom:ph2004", DeviceState.INVALID)
    await wait_until(lambda: _is(probe, "2004", ("", "Unknown")), 2.0, "removed")


async def test_beside_a_sip_link_the_hint_names_the_device_alone(
    star: Asterisk, probe: AmiClient
) -> None:
    """An AMI session that shares presence only (beside [asterisk.sip]): Asterisk aggregates the
    remote EIDs' states under the device's own name, so the hint names only that."""
    async for link in _linked(star, ()):
        link.remote_device("Custom:ph2005", DeviceState.INUSE)
        await wait_until(lambda: _kept(probe, "2005"), 2.0, "hint added")
        assert (await state_of(probe, "2005"))[0] == "Custom:ph2005"
        link.remote_device("Custom:ph2005", DeviceState.INVALID)
        await wait_until(lambda: _is(probe, "2005", ("", "Unknown")), 2.0, "removed")


async def _is(probe: AmiClient, exten: str, want: tuple[str, str]) -> bool:
    return await state_of(probe, exten) == want


async def _kept(probe: AmiClient, exten: str) -> bool:
    return bool((await state_of(probe, exten))[0])


async def test_dialplan_extension_add_never_replaces_and_reload_drops_it(star: Asterisk) -> None:
    """What the keeper relies on, pinned on every build: without ``Replace`` an existing
    hint is refused; a missing context is created; ``dialplan reload`` drops added ones."""

    config = AmiConfig("127.0.0.1", star.ami_port, AMI_USER, AMI_SECRET)
    async with AmiClient(config) as client:
        await client.wait_connected()

        async def add(context: str, exten: str, app: str) -> str:
            answer = await client.send_action(
                Action.of(
                    "DialplanExtensionAdd",
                    Context=context,
                    Extension=exten,
                    Priority="hint",
                    Application=app,
                )
            )
            return answer.message

        assert "already exist" in await add(CONTEXT, "1000", "Custom:other")
        assert await add("pinned-new", "3001", "Custom:p") == "Added requested extension"
        assert "3001@pinned-new" in star.cli("core show hints").stdout
        star.cli("dialplan reload")
        assert "3001@pinned-new" not in star.cli("core show hints").stdout
        assert "1000@ext-local-custom" in star.cli("core show hints").stdout
