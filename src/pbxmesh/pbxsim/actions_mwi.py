"""The simulator's AMI actions on mailboxes: res_mwi_external_ami's ``MWIUpdate``/``MWIGet``/
``MWIDelete``, app_voicemail's ``VoicemailUsersList``/``VoicemailRefresh``, and
``MailboxCount``/``MailboxStatus``, plus the CLI's ``Command``."""

from __future__ import annotations

from ..links.ami.codec import Action, Event, Response
from .dialplan import output_lines
from .pbx import SimPbx
from .session import Session, answer, error, write_list

__all__ = ["MailboxActions"]


class MailboxActions:
    """The mailbox actions and ``Command`` on one :class:`SimPbx`."""

    def __init__(self, pbx: SimPbx) -> None:
        self.pbx = pbx

    def mwi_update(self, session: Session, action: Action) -> Response:
        mailbox = action.get("Mailbox") or ""
        if not mailbox:
            return error(action, "Missing mailbox parameter in request")
        old_text, new_text = action.get("OldMessages"), action.get("NewMessages")
        old = SimPbx.parse_count(old_text)
        if old is None:
            return error(action, f"Invalid OldMessages: {old_text}")
        new = SimPbx.parse_count(new_text)
        if new is None:
            return error(action, f"Invalid NewMessages: {new_text}")
        self.pbx.mwi_update(mailbox, new, old)
        return answer(action, "Success")

    def mwi_get(self, session: Session, action: Action) -> Response | None:
        mailbox = action.get("Mailbox") or ""
        if not mailbox:
            return error(action, "Missing mailbox parameter in request")
        try:
            boxes = self.pbx.mwi_match(mailbox)
        except ValueError:
            return error(action, f"Mailbox regex format invalid in: {mailbox}")
        items = []
        for box in boxes:
            new, old = self.pbx.mwi_db[box]
            fields: list[tuple[str, object]] = [
                ("Event", "MWIGet"),
                ("Mailbox", box),
                ("OldMessages", old),
                ("NewMessages", new),
            ]
            if action.action_id is not None:
                fields.append(("ActionID", action.action_id))
            items.append(Event(tuple((k, str(v)) for k, v in fields)))
        write_list(session, action, "Mailboxes will follow", "MWIGetComplete", items)
        return None

    def mwi_delete(self, session: Session, action: Action) -> Response:
        mailbox = action.get("Mailbox") or ""
        if not mailbox:
            return error(action, "Missing mailbox parameter in request")
        try:
            self.pbx.mwi_delete(mailbox)
        except ValueError:
            return error(action, f"Mailbox regex format invalid in: {mailbox}")
        return answer(action, "Success")

    def voicemail_users_list(self, session: Session, action: Action) -> Response | None:
        items = []
        for box, (new, old) in sorted((self.pbx.voicemail or {}).items()):
            number, _, context = box.partition("@")
            fields: list[tuple[str, object]] = [
                ("Event", "VoicemailUserEntry"),
                *([("ActionID", action.action_id)] if action.action_id is not None else []),
                ("VMContext", context),
                ("VoiceMailbox", number),
                ("Fullname", number),
                ("Email", "(null)"),
                ("Pager", ""),
                ("ServerEmail", "asterisk"),
                ("FromString", ""),
                ("MailCommand", "/usr/sbin/sendmail -t"),
                ("Language", ""),
                ("TimeZone", ""),
                ("Callback", ""),
                ("Dialout", ""),
                ("UniqueID", ""),
                ("ExitContext", ""),
                ("SayDurationMinimum", 2),
                ("SayEnvelope", "Yes"),
                ("SayCID", "No"),
                ("AttachMessage", "Yes"),
                ("AttachmentFormat", ""),
                ("DeleteMessage", "No"),
                ("VolumeGain", "0.00"),
                ("CanReview", "No"),
                ("CanMarkUrgent", "Yes"),
                ("CallOperator", "No"),
                ("MaxMessageCount", 100),
                ("MaxMessageLength", 0),
                ("NewMessageCount", new),
                ("OldMessageCount", old),
            ]
            items.append(Event(tuple((k, str(v)) for k, v in fields)))
        write_list(
            session, action, "Voicemail user list will follow", "VoicemailUserEntryComplete", items
        )
        return None

    def voicemail_refresh(self, session: Session, action: Action) -> Response:
        self.pbx.voicemail_refresh(action.get("Context"), action.get("Mailbox"))
        return answer(action, "Success", ("Message", "Refresh sent"))

    def mailbox_count(self, session: Session, action: Action) -> Response:
        mailbox = action.get("Mailbox") or ""
        if not mailbox:
            return error(action, "Mailbox not specified")
        new, old = self.pbx.inbox_count(mailbox)
        return answer(
            action,
            "Success",
            ("Message", "Mailbox Message Count"),
            ("Mailbox", mailbox),
            ("UrgMessages", 0),
            ("NewMessages", new),
            ("OldMessages", old),
        )

    def mailbox_status(self, session: Session, action: Action) -> Response:
        mailbox = action.get("Mailbox") or ""
        if not mailbox:
            return error(action, "Mailbox not specified")
        waiting = int(self.pbx.has_voicemail(mailbox))
        return answer(
            action,
            "Success",
            ("Message", "Mailbox Status"),
            ("Mailbox", mailbox),
            ("Waiting", waiting),
        )

    def command(self, session: Session, action: Action) -> Response:
        command = action.get("Command") or ""
        if not command:
            return error(action, "No command provided")
        ok, text = self.pbx.command(command)
        outputs = [("Output", line) for line in output_lines(text)]
        return answer(
            action, "Success" if ok else "Error", ("Message", "Command output follows"), *outputs
        )
