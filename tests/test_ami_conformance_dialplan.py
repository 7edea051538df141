"""The simulator held to the real thing for pbx_config's ``DialplanExtensionAdd`` and
``DialplanExtensionRemove`` of hints (what the kept hints of ``[asterisk.hints]`` use), and
what ``dialplan reload`` does to the hints added that way. Expected headers were read off both
real builds; both PBXs must give them exactly.
"""

from __future__ import annotations

from tests.test_ami_conformance import Headers, ask, error, ok, pbx, session

__all__ = ["pbx"]

ADDED = ok(("Message", "Added requested extension"))
EXISTS = error("That extension and priority already exist at that context")


def state(exten: str, context: str, hint: str, status: str, text: str) -> Headers:
    return ok(
        ("Message", "Extension Status"),
        ("Exten", exten),
        ("Context", context),
        ("Hint", hint),
        ("Status", status),
        ("StatusText", text),
    )


async def test_add_a_hint_never_replace_one_and_remove_it(pbx: int) -> None:
    async with session(pbx) as ami:

        async def add(context: str, exten: str, app: str, **more: str) -> Headers:
            return await ask(
                ami,
                "DialplanExtensionAdd",
                Context=context,
                Extension=exten,
                Priority="hint",
                Application=app,
                **more,
            )

        assert await add("devstate_test", "2001", "Custom:far") == ADDED
        got = await ask(ami, "ExtensionState", Exten="2001", Context="devstate_test")
        assert got == state("2001", "devstate_test", "Custom:far", "0", "Idle")
        assert await add("devstate_test", "2001", "Custom:other") == EXISTS
        assert await add("devstate_test", "1234", "Custom:other") == EXISTS  # the file's hint
        assert await add("devstate_test", "1234", "Custom:other", Replace="no") == EXISTS
        got = await ask(ami, "ExtensionState", Exten="1234", Context="devstate_test")
        assert got == state("1234", "devstate_test", "Custom:mystate", "0", "Idle")
        assert await add("made-here", "2002", "Custom:far") == ADDED  # the context is created
        missing = {"Context": "devstate_test", "Extension": "2009", "Priority": "hint"}
        assert await ask(ami, "DialplanExtensionAdd", **missing) == error(
            "Context, Extension, Priority, and Application must be defined"
            " for DialplanExtensionAdd."
        )
        removed = ok(("Message", "Removed the requested priority from the extension"))
        remove = {"Context": "devstate_test", "Extension": "2001", "Priority": "hint"}
        assert await ask(ami, "DialplanExtensionRemove", **remove) == removed
        failed = error("Failed to remove requested extension")
        assert await ask(ami, "DialplanExtensionRemove", **remove) == failed
        got = await ask(ami, "ExtensionState", Exten="2001", Context="devstate_test")
        assert got == state("2001", "devstate_test", "", "-1", "Unknown")


async def test_dialplan_reload_drops_the_added_hints_only(pbx: int) -> None:
    async with session(pbx) as ami:
        fields = {"Extension": "2003", "Priority": "hint", "Application": "Custom:far"}
        assert await ask(ami, "DialplanExtensionAdd", Context="devstate_test", **fields) == ADDED
        answer = await ask(ami, "Command", Command="dialplan reload")
        assert ("Output", "Dialplan reloaded.") in answer
        got = await ask(ami, "ExtensionState", Exten="2003", Context="devstate_test")
        assert got == state("2003", "devstate_test", "", "-1", "Unknown")
        got = await ask(ami, "ExtensionState", Exten="1234", Context="devstate_test")
        assert got == state("1234", "devstate_test", "Custom:mystate", "0", "Idle")
