#!/usr/bin/env python3
"""Mint many distinct CDS Hooks client JWTs (ES384) for the load benchmark.

radsight refuses a replayed `jti`, so every request under load needs its own token. Calling
`radsight keys token` once per token is far too slow for tens of thousands, so this signs them
directly with the private key that `radsight keys generate` wrote.

Header {alg: ES384, typ: JWT, kid: <kid of the JWKS's first key>}; claims {iss, aud, iat,
exp = iat + 300, jti = uuid4} -- the same shape `radsight keys token` prints.

    mint_tokens.py --key DIR/client.key.pem --jwks DIR/client.jwks.json \
        --iss https://ehr.example.org --aud http://127.0.0.1:18080/cds-services/ID \
        --count 40000 --out tokens.txt

Writes one token per line. Uses both cores (multiprocessing) because P-384 signing is the cost.
"""

import argparse
import base64
import json
import multiprocessing
import os
import sys
import time
import uuid

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_KEY = None
_HEADER_B64 = None
_ISS = None
_AUD = None


def _init_worker(key_pem: bytes, header_b64: str, iss: str, aud: str) -> None:
    global _KEY, _HEADER_B64, _ISS, _AUD
    _KEY = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(_KEY, ec.EllipticCurvePrivateKey) or _KEY.curve.name != "secp384r1":
        raise SystemExit("the key is not a P-384 EC key (generate it with --alg es384)")
    _HEADER_B64, _ISS, _AUD = header_b64, iss, aud


def _mint(n: int) -> list[str]:
    now = int(time.time())
    out = []
    for _ in range(n):
        claims = {"iss": _ISS, "aud": _AUD, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
        signing_input = _HEADER_B64 + "." + b64url(json.dumps(claims, separators=(",", ":")).encode())
        der = _KEY.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der)
        sig = r.to_bytes(48, "big") + s.to_bytes(48, "big")  # JWS ES384: raw r || s
        out.append(signing_input + "." + b64url(sig))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--key", required=True)
    p.add_argument("--jwks", required=True)
    p.add_argument("--iss", required=True)
    p.add_argument("--aud", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--procs", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()

    with open(args.jwks) as f:
        kid = json.load(f)["keys"][0]["kid"]
    with open(args.key, "rb") as f:
        key_pem = f.read()
    header_b64 = b64url(json.dumps({"alg": "ES384", "typ": "JWT", "kid": kid}, separators=(",", ":")).encode())

    chunk = 2000
    sizes = [chunk] * (args.count // chunk) + ([args.count % chunk] if args.count % chunk else [])
    started = time.time()
    with multiprocessing.Pool(args.procs, _init_worker, (key_pem, header_b64, args.iss, args.aud)) as pool:
        tokens = [t for part in pool.map(_mint, sizes) for t in part]
    if len(set(tokens)) != len(tokens) or len(tokens) != args.count:
        raise SystemExit("token minting produced duplicates or the wrong count")
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(tokens))
        f.write("\n")
    os.replace(tmp, args.out)
    print(f"minted {len(tokens)} tokens in {time.time() - started:.1f}s -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
