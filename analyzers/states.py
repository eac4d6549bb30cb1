"""TCP endpoint states (RFC 9293 names) inferred from what the capture shows.

The state machine is a table, ``TRANSITIONS[(state, event)] -> state``, that can be printed
(``loopcap states``) and drawn.  Each packet is applied to its sender (``send_*`` events) and to
its receiver (``recv_*`` events); on loopback both happen at the capture instant.  A pair missing
from the table is not an error in someone else's traffic: it is recorded as an *unexpected*
transition and the state is left unchanged, so odd captures are shown, never rejected.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum


class State(str, Enum):
    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN_SENT"
    SYN_RECEIVED = "SYN_RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN_WAIT_1"
    FIN_WAIT_2 = "FIN_WAIT_2"
    CLOSE_WAIT = "CLOSE_WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST_ACK"
    TIME_WAIT = "TIME_WAIT"


class Event(str, Enum):
    SEND_SYN = "send SYN"
    RECV_SYN = "recv SYN"
    SEND_SYNACK = "send SYN-ACK"
    RECV_SYNACK = "recv SYN-ACK"
    RECV_ACK_OF_SYN = "recv ACK of SYN"
    SEND_FIN = "send FIN"
    RECV_FIN = "recv FIN"
    RECV_ACK_OF_FIN = "recv ACK of FIN"
    SEND_RST = "send RST"
    RECV_RST = "recv RST"


S, E = State, Event
TRANSITIONS: dict[tuple[State, Event], State] = {
    # opening
    (S.CLOSED, E.SEND_SYN): S.SYN_SENT,
    (S.LISTEN, E.RECV_SYN): S.SYN_RECEIVED,
    (S.SYN_SENT, E.RECV_SYNACK): S.ESTABLISHED,
    (S.SYN_SENT, E.RECV_SYN): S.SYN_RECEIVED,  # simultaneous open
    (S.SYN_SENT, E.SEND_SYN): S.SYN_SENT,  # SYN retransmission
    (S.SYN_RECEIVED, E.RECV_SYN): S.SYN_RECEIVED,  # retransmitted SYN
    (S.SYN_RECEIVED, E.SEND_SYNACK): S.SYN_RECEIVED,
    (S.SYN_RECEIVED, E.RECV_ACK_OF_SYN): S.ESTABLISHED,
    (S.ESTABLISHED, E.RECV_SYNACK): S.ESTABLISHED,  # retransmitted SYN-ACK
    (S.ESTABLISHED, E.SEND_SYNACK): S.ESTABLISHED,
    # closing
    (S.ESTABLISHED, E.SEND_FIN): S.FIN_WAIT_1,
    (S.ESTABLISHED, E.RECV_FIN): S.CLOSE_WAIT,
    (S.SYN_RECEIVED, E.SEND_FIN): S.FIN_WAIT_1,
    (S.SYN_RECEIVED, E.RECV_FIN): S.CLOSE_WAIT,
    (S.FIN_WAIT_1, E.RECV_ACK_OF_FIN): S.FIN_WAIT_2,
    (S.FIN_WAIT_1, E.RECV_FIN): S.CLOSING,  # simultaneous close
    (S.FIN_WAIT_1, E.SEND_FIN): S.FIN_WAIT_1,  # FIN retransmission
    (S.FIN_WAIT_2, E.RECV_FIN): S.TIME_WAIT,
    (S.CLOSING, E.RECV_ACK_OF_FIN): S.TIME_WAIT,
    (S.CLOSING, E.SEND_FIN): S.CLOSING,
    (S.CLOSE_WAIT, E.SEND_FIN): S.LAST_ACK,
    (S.CLOSE_WAIT, E.RECV_FIN): S.CLOSE_WAIT,  # retransmitted FIN
    (S.LAST_ACK, E.RECV_ACK_OF_FIN): S.CLOSED,
    (S.LAST_ACK, E.SEND_FIN): S.LAST_ACK,
    (S.LAST_ACK, E.RECV_FIN): S.LAST_ACK,
    (S.TIME_WAIT, E.RECV_FIN): S.TIME_WAIT,  # the peer retransmits its FIN
    (S.CLOSED, E.RECV_ACK_OF_FIN): S.CLOSED,
    (S.CLOSED, E.RECV_SYN): S.CLOSED,  # nothing listens: the SYN is answered with RST,ACK (refused)
}
# a reset closes from every state
for _s in State:
    TRANSITIONS[(_s, E.SEND_RST)] = S.CLOSED
    TRANSITIONS[(_s, E.RECV_RST)] = S.CLOSED

#: What :meth:`EndpointStates.apply` does, ``_STEPS[state][event]``, precomputed for every pair for
#: :func:`replay_to_dicts`: ``None`` when nothing is recorded (a transition to the same state), else
#: (next state, then the ``from``, ``event``, ``to`` and ``expected`` fields of the change's
#: ``to_dict()``).  A pair missing from TRANSITIONS is unexpected and keeps the state.  The enum
#: values are stored as plain strings because reading ``.value`` is a Python-level property call.
#: Built once from TRANSITIONS, which is a fixed table (nothing edits it after import).
_STEPS: dict[State, dict[Event, tuple[State, str, str, str, bool] | None]] = {}
for _s in State:
    _STEPS[_s] = {}
    for _e in Event:
        _t = TRANSITIONS.get((_s, _e))
        if _t is None:
            _STEPS[_s][_e] = (_s, _s.value, _e.value, _s.value, False)
        elif _t is _s:
            _STEPS[_s][_e] = None
        else:
            _STEPS[_s][_e] = (_t, _s.value, _e.value, _t.value, True)


@dataclass(frozen=True)
class StateChange:
    frame: int
    side: str  # "client" / "server"
    before: State
    event: Event
    after: State
    expected: bool = True

    def to_dict(self) -> dict[str, object]:
        return {"frame": self.frame, "side": self.side, "from": self.before.value, "event": self.event.value,
                "to": self.after.value, "expected": self.expected}


class EndpointStates:
    """Both endpoints of one connection; ``apply`` returns the changes one packet causes."""

    def __init__(self, client: State = State.CLOSED, server: State = State.LISTEN) -> None:
        self.state = {"client": client, "server": server}
        self.timeline: list[StateChange] = []

    def apply(self, frame: int, side: str, event: Event) -> StateChange | None:
        before = self.state[side]
        after = TRANSITIONS.get((before, event))
        if after is None:
            ch = StateChange(frame, side, before, event, before, expected=False)
            self.timeline.append(ch)
            return ch
        if after is before:
            return None
        self.state[side] = after
        ch = StateChange(frame, side, before, event, after)
        self.timeline.append(ch)
        return ch


def replay_to_dicts(client: State, server: State, steps: Iterable[tuple[int, str, Event]]
                    ) -> tuple[list[dict[str, object]], dict[str, State]]:
    """Apply ``steps`` (frame, side, event) in order to ``EndpointStates(client, server)``.

    Returns what ``[ch.to_dict() for ch in es.timeline]`` and ``es.state`` would be afterwards, but
    without building a :class:`StateChange` per event: the summaries replay every connection of a
    capture, and the objects and ``.value`` reads were most of that cost.  Kept equal to ``apply`` by
    ``tests/test_summary_speed_equivalence.py``.
    """
    state = {"client": client, "server": server}
    timeline: list[dict[str, object]] = []
    for frame, side, event in steps:
        step = _STEPS[state[side]][event]
        if step is not None:
            after, before_name, event_name, after_name, expected = step
            state[side] = after
            timeline.append({"frame": frame, "side": side, "from": before_name, "event": event_name,
                             "to": after_name, "expected": expected})
    return timeline, state


def table_text() -> str:
    """The transition table as aligned text (for docs and ``loopcap states``)."""
    rows = [(s.value, e.value, t.value) for (s, e), t in TRANSITIONS.items()
            if e not in (Event.SEND_RST, Event.RECV_RST)]
    w1 = max(len(r[0]) for r in rows)
    w2 = max(len(r[1]) for r in rows)
    lines = [f"{'state':<{w1}}  {'event':<{w2}}  next state", f"{'-' * w1}  {'-' * w2}  ----------"]
    lines += [f"{a:<{w1}}  {b:<{w2}}  {c}" for a, b, c in rows]
    lines.append(f"{'(any)':<{w1}}  {'send RST / recv RST':<{w2}}  CLOSED")
    return "\n".join(lines)
