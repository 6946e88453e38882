#!/usr/bin/python3
"""rpc-bench-grpcio.py: unary Echo calls from python3-grpcio over one kept
channel (one HTTP/2 connection, as grpc-go sidecars and kubelet use), for
bench/run's gRPC cost figure. The request is hand-encoded (EchoRequest
field 1 = a 16-byte payload), so no generated code is needed.

  rpc-bench-grpcio.py unix:PATH SECONDS

Prints one JSON object like bench/rpc-bench.c does."""
import json
import resource
import sys
import time

import grpc

target, seconds = sys.argv[1], float(sys.argv[2])
req = b"\x0a\x10" + bytes(16)
with grpc.insecure_channel(target) as ch:
    echo = ch.unary_unary("/amber.test.v1.Test/Echo")
    grpc.channel_ready_future(ch).result(timeout=10)
    echo(req, timeout=5)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    calls = errors = 0
    while time.perf_counter() - t0 < seconds:
        if echo(req, timeout=5) == req:
            calls += 1
        else:
            errors += 1
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
print(json.dumps({"calls": calls, "errors": errors, "threads": 1, "payload": 16, "seconds": round(wall, 3),
                  "calls_per_s": calls / wall, "client_cpu_us_per_call": cpu * 1e6 / max(calls, 1)}))
sys.exit(1 if errors else 0)
