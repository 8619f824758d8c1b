"""Keep an in-memory deny-set of revoked tokens, subjects and sessions from token_store's revocation
events (psycopg 3): LISTEN on token_store.notify_channel, and after every (re)connection catch up
with token_store.revocations_since, so nothing committed while the listener was away is missed.

A cache in front of token_store (a websocket server, an API gateway that caches "valid") asks
`denied(claims)` before trusting what it cached. The server must have token_store.notify_channel
set (ALTER SYSTEM SET token_store.notify_channel = 'token_store_events', then reload); the
connecting role needs token_store_app or token_store_admin (for revocations_since).

    python revocation_listener.py            # prints each event as it arrives (PG* variables)
"""

import datetime as dt
import json
import sys
import threading

import psycopg
from psycopg import sql

CHANNEL = "token_store_events"
# Each event is dated at the start of its transaction but arrives at commit, so a catch-up reaches
# back this far before the last event seen; events already known are simply seen twice.
CATCH_UP_MARGIN = dt.timedelta(minutes=5)
APPLICATION_NAME = "token_store revocation listener"


class DenySet:
    """What the events have revoked so far: token ids, jtis, sessions, subjects (with the time
    before which their tokens are refused) and keys that are no longer active."""

    def __init__(self):
        self.lock = threading.Lock()
        self.token_ids: set[str] = set()
        self.jtis: set[str] = set()
        self.sessions: set[str] = set()
        self.subjects: dict[str, dt.datetime] = {}
        self.keys: dict[str, str] = {}
        self.last_at: dt.datetime | None = None
        self.partial = 0

    def add(self, event: dict):
        """Take in one event (a NOTIFY payload, or a row of revocations_since as a dict)."""
        at = event["at"]
        if isinstance(at, str):
            at = dt.datetime.fromisoformat(at.replace("Z", "+00:00"))
        with self.lock:
            kind = event["event"]
            if kind == "token_revoked":
                if event.get("token_id"):
                    self.token_ids.add(str(event["token_id"]))
                if event.get("jti"):
                    self.jtis.add(event["jti"])
            elif kind in ("session_ended", "refresh_reused"):
                self.sessions.add(str(event["sid"]))
            elif kind == "subject_revoked" and event.get("sub") is not None:
                before = self.subjects.get(event["sub"])
                self.subjects[event["sub"]] = max(before, at) if before else at
            elif kind.startswith("key_") and event.get("kid") is not None:
                self.keys[event["kid"]] = kind[len("key_"):]
            if event.get("omitted"):
                # a member too long for NOTIFY: the next catch-up brings the whole row
                self.partial += 1
            self.last_at = max(self.last_at, at) if self.last_at else at

    def denied(self, claims: dict, token_id: str | None = None, kid: str | None = None) -> bool:
        """Whether cached claims of a token are revoked by what the events said."""
        with self.lock:
            if token_id and str(token_id) in self.token_ids:
                return True
            if claims.get("jti") in self.jtis:
                return True
            if claims.get("sid") in self.sessions:
                return True
            if kid and self.keys.get(kid) == "retired":
                return True
            before = self.subjects.get(claims.get("sub"))
            iat = claims.get("iat")
            if before is not None and (iat is None or iat <= before.timestamp()):
                return True
            return False


def catch_up(conn, deny: DenySet, since: dt.datetime | None = None) -> int:
    """Take in every event the tables still hold since `since` (default: the last event seen, less
    the margin; everything when none was seen). Returns how many rows came."""
    if since is None:
        since = (deny.last_at - CATCH_UP_MARGIN) if deny.last_at else dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    cur = conn.execute("SELECT event, token_id, jti, sub, sid, kid, at FROM token_store.revocations_since(%s)",
                       (since,))
    names = [d.name for d in cur.description]
    rows = cur.fetchall()
    for row in rows:
        deny.add(dict(zip(names, row)))
    return len(rows)


def listen(conninfo: str, deny: DenySet, stop: threading.Event, on_event=None, channel: str = CHANNEL,
           ready: threading.Event | None = None):
    """LISTEN, catch up, then take in notifications until `stop` is set; reconnects (and catches up
    again) when the connection is lost."""
    while not stop.is_set():
        try:
            with psycopg.connect(conninfo, autocommit=True, application_name=APPLICATION_NAME) as conn:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                # after LISTEN: whatever commits from now on is notified, the rest is in the tables
                catch_up(conn, deny)
                if ready is not None:
                    ready.set()
                while not stop.is_set():
                    for n in conn.notifies(timeout=0.5, stop_after=None):
                        event = json.loads(n.payload)
                        deny.add(event)
                        if on_event is not None:
                            on_event(event)
                        if stop.is_set():
                            break
        except psycopg.OperationalError as e:
            print(f"connection lost ({e}); reconnecting", file=sys.stderr)
            stop.wait(1.0)


def main():
    deny = DenySet()
    stop = threading.Event()
    try:
        listen("", deny, stop, on_event=lambda e: print(json.dumps(e), flush=True))
    except KeyboardInterrupt:
        stop.set()


if __name__ == "__main__":
    main()
