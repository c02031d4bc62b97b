#!/usr/bin/env python3
"""An independent verifier for radsight's audit log, written from RFC 9162 and the C2SP
signed-note / tlog-checkpoint specifications. It shares no code with radsight: the tests use it
to check that what radsight serves can be verified by a third party.

Reads one JSON object on stdin:
  {"vkey": "...", "checkpoint": "<signed note>",
   "inclusion": [{"index", "tree_size", "leaf_hash", "proof": [...], "root_hash", "entry"?}],
   "consistency": [{"from", "to", "from_root", "to_root", "proof": [...]}],
   "expect_valid": true}
Prints one line per check and exits 0 when every check agrees with expect_valid, 1 otherwise.
"""
import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def leaf(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def verify_inclusion(index, size, leaf_hash, proof, root):
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = node(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(size1, size2, root1, root2, proof):
    """RFC 9162 section 2.1.4.2."""
    if size1 == size2:
        return not proof and root1 == root2
    if size1 == 0 or size1 > size2 or not proof:
        return False
    if size1 & (size1 - 1) == 0:
        proof = [root1] + proof
    fn, sn = size1 - 1, size2 - 1
    while fn % 2 == 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr = node(c, fr)
            sr = node(c, sr)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == root1 and sr == root2 and sn == 0


def open_checkpoint(note: str, vkey: str):
    """C2SP signed-note with an Ed25519 key given as name+hexid+base64(0x01||key)."""
    name, key_id, key = vkey.split("+", 2)
    key = base64.b64decode(key)
    assert key[0] == 1 and len(key) == 33, "not an Ed25519 verifier key"
    expected_id = hashlib.sha256(name.encode() + b"\n\x01" + key[1:]).digest()[:4]
    assert expected_id.hex() == key_id, "verifier key id does not match"
    text, sigs = note.rsplit("\n\n", 1)
    text += "\n"
    ok = False
    for line in sigs.splitlines():
        assert line.startswith("\u2014 "), "signature line without em dash"
        signer, sig = line[2:].split(" ", 1)
        sig = base64.b64decode(sig)
        if signer != name or sig[:4] != expected_id:
            continue
        Ed25519PublicKey.from_public_bytes(key[1:]).verify(sig[4:], text.encode())
        ok = True
    assert ok, "no signature by the verifier key"
    origin, size, root = text.splitlines()[:3]
    assert origin == name, "origin differs from key name"
    return int(size), base64.b64decode(root)


def main():
    req = json.load(sys.stdin)
    expect = req.get("expect_valid", True)
    results = []
    if "checkpoint" in req:
        try:
            size, root = open_checkpoint(req["checkpoint"], req["vkey"])
            results.append(("checkpoint", True))
            for c in req.get("inclusion", []):
                if c["tree_size"] == size:
                    results.append((f"checkpoint root = proof root at {size}", bytes.fromhex(c["root_hash"]) == root))
        except (AssertionError, InvalidSignature, ValueError) as e:
            results.append((f"checkpoint ({e})", False))
    for c in req.get("inclusion", []):
        lh = bytes.fromhex(c["leaf_hash"])
        if "entry" in c:
            results.append((f"leaf hash of entry {c['index']}", leaf(c["entry"].encode()) == lh))
        ok = verify_inclusion(c["index"], c["tree_size"], lh, [bytes.fromhex(p) for p in c["proof"]], bytes.fromhex(c["root_hash"]))
        results.append((f"inclusion {c['index']}/{c['tree_size']}", ok))
    for c in req.get("consistency", []):
        ok = verify_consistency(c["from"], c["to"], bytes.fromhex(c["from_root"]), bytes.fromhex(c["to_root"]),
                                [bytes.fromhex(p) for p in c["proof"]])
        results.append((f"consistency {c['from']}->{c['to']}", ok))
    for name, ok in results:
        print(f"{'valid' if ok else 'INVALID'} {name}")
    sys.exit(0 if results and all(ok == expect for _, ok in results) else 1)


if __name__ == "__main__":
    main()
