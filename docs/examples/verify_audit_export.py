#!/usr/bin/env python3
"""Verify an ``appliance audit export`` independently of the appliance (docs/AUDIT.md).

Usage: appliance audit export > audit.jsonl; python3 verify_audit_export.py audit.jsonl
       [--head HEX] [--events N]   (a witness's audit_head / audit_seq, if you have one)
Exit 0 and "intact: N events, head H" when every link and hash holds; exit 1 and the
first bad event otherwise. Uses only the Python standard library.
"""

import hashlib
import json
import sys

FIELDS = ("seq", "ts", "type", "outcome", "code", "name", "version", "detail")


def canonical(obj):
    # RFC 8785 for objects of strings, integers and nulls: sorted keys, no whitespace,
    # UTF-8, only '"', '\\' and control characters escaped.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def main(argv):
    path, want_head, want_count = argv[1], None, None
    if "--head" in argv:
        want_head = argv[argv.index("--head") + 1]
    if "--events" in argv:
        want_count = int(argv[argv.index("--events") + 1])
    prev, expected, hashes = "0" * 64, 1, {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            e = json.loads(line)
            if e["seq"] != expected:
                return fail(f"event {expected} is missing (found {e['seq']})")
            if e["prev_hash"] != prev:
                return fail(f"event {e['seq']} does not link to event {e['seq'] - 1}")
            if json.loads(e["detail_json"]) != e["detail"]:
                return fail(f"event {e['seq']}: detail differs from detail_json")
            body = {k: e[k] for k in FIELDS if k != "detail"}
            body["detail"] = e["detail_json"]
            digest = hashlib.sha256(bytes.fromhex(prev) + canonical(body)).hexdigest()
            if digest != e["hash"]:
                return fail(f"event {e['seq']} was altered (hash {digest[:16]} != stored)")
            prev, expected = e["hash"], expected + 1
            hashes[e["seq"]] = prev
    count = expected - 1
    if want_count is not None and count < want_count:
        return fail(f"{count} events, the witness saw {want_count}: the log was truncated")
    if want_head is not None and hashes.get(want_count or count) != want_head:
        return fail(f"event {want_count or count} is not the witnessed head {want_head[:16]}")
    print(f"intact: {count} events, head {prev}")
    return 0


def fail(message):
    print(f"BROKEN: {message}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
