"""Runs last (by name): the server log of the whole session holds no key material and no crash
besides the worker test_worker.py killed on purpose."""

import base64


def test_log_holds_no_key_material(ts):
    log = ts.log_text()
    key = ts.encryption_key_text()
    raw = bytes.fromhex(key) if len(key) == 64 else base64.b64decode(key)
    forms = {key, raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
    leaks = sum(1 for line in log.splitlines() for form in forms if form in line)
    assert leaks == 0, f"the encryption key appears in {ts.server_log}"
    leaked_secrets = sorted(s for s in ts.secrets if s in log)
    assert leaked_secrets == [], f"HMAC secrets used by the tests appear in {ts.server_log}"


def test_no_process_died_unexpectedly(ts):
    lines = ts.log_text(ts.log_offset_at_start).splitlines()
    deaths = [line for line in lines if "terminated by signal" in line]
    unexpected = [line for line in deaths if not any(f"(PID {pid})" in line for pid in ts.killed_pids)]
    assert unexpected == []
    for pid in ts.killed_pids:
        assert any(f"(PID {pid})" in line for line in deaths), f"the kill of {pid} is not in the log"
    assert [line for line in lines if "PANIC:" in line] == []
