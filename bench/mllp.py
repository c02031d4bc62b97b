#!/usr/bin/env python3
"""MLLP throughput: ORU^R01 messages per second, each waited for until its ACK, on loopback.

    bench/mllp.py --port 2575 --connections 4 --messages 500

Start radsight first (release build, e.g. `target/release/radsight serve` with
RADSIGHT_JOBS__WORKERS=0 so that only ingestion is measured). Every message names a new study,
so each one commits an order, a study, a job and two audit entries before its AA. Each
connection sends one message, waits for its ACK, then sends the next (original-mode
acknowledgement, as senders do). Prints messages/s and ACK latency percentiles; exits 1 if any
ACK is not AA.

    bench/mllp.py --port 2575 --send examples/hl7/oru-r01.hl7

sends one message from a file (segments separated by CR or newlines) and prints the ACK.
"""

import argparse
import socket
import statistics
import threading
import time
import uuid

START, END = b"\x0b", b"\x1c\x0d"


def message(control: str, uid: str) -> bytes:
    segments = [
        f"MSH|^~\\&|BENCH|HOSP|RADSIGHT|AI|20261129120000||ORU^R01|{control}|P|2.3",
        "PID|1||BENCH-PATIENT||Bench^Patient",
        f"OBR|1|P-{control}|F-{control}|71250^CT CHEST^CPT||||||||||||||A-{control}||||||CT|F",
        f"OBX|1|ST|110180^Study Instance UID^DCM||{uid}||||||F",
    ]
    return START + "\r".join(segments).encode() + b"\r" + END


def run_connection(port: int, count: int, prefix: str, latencies: list, failures: list) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        pending = b""
        for i in range(count):
            uid = f"2.25.{uuid.uuid4().int}"
            t0 = time.perf_counter()
            s.sendall(message(f"{prefix}-{i}", uid))
            while END not in pending:
                chunk = s.recv(4096)
                if not chunk:
                    failures.append("connection closed")
                    return
                pending += chunk
            ack, pending = pending.split(END, 1)
            latencies.append(time.perf_counter() - t0)
            if b"MSA|AA|" not in ack:
                failures.append(ack.decode(errors="replace"))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=2575)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--messages", type=int, default=500, help="per connection")
    p.add_argument("--send", metavar="FILE", help="send this one message and print its ACK")
    a = p.parse_args()
    if a.send:
        text = open(a.send, "rb").read().replace(b"\r\n", b"\r").replace(b"\n", b"\r")
        with socket.create_connection(("127.0.0.1", a.port)) as s:
            s.sendall(START + text + END)
            reply = b""
            while END not in reply:
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
        print(reply.strip(START + END).decode(errors="replace").replace("\r", "\n"))
        return 0 if b"MSA|AA|" in reply else 1
    latencies: list = []
    failures: list = []
    run = uuid.uuid4().hex[:8]
    threads = [
        threading.Thread(target=run_connection, args=(a.port, a.messages, f"{run}-{c}", latencies, failures))
        for c in range(a.connections)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    total = len(latencies)
    q = statistics.quantiles(latencies, n=100) if total > 1 else [0.0] * 99
    print(f"{total} messages over {a.connections} connections in {elapsed:.2f} s: {total / elapsed:.0f} msg/s")
    print(f"ACK latency ms: p50 {q[49] * 1000:.1f}  p90 {q[89] * 1000:.1f}  p99 {q[98] * 1000:.1f}")
    if failures:
        print(f"{len(failures)} failures, first: {failures[0]!r}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
