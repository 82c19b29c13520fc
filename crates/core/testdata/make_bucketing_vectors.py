#!/usr/bin/env python3
"""Writes bucketing.json: (salt, unit id) -> bucket, computed by an
independent SipHash-2-4 written here from the reference description
(Aumasson & Bernstein), not by the Rust code it checks.

bucket = SipHash-2-4(key = 16 zero bytes, UTF-8(salt) || 0xFF || UTF-8(unit_id))
         as an unsigned 64-bit integer, modulo 10000.

Usage: python3 make_bucketing_vectors.py > bucketing.json
"""
import json
import struct

MASK = (1 << 64) - 1


def rotl(x, b):
    return ((x << b) | (x >> (64 - b))) & MASK


def siphash24(k0, k1, data):
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573

    def rounds(n):
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & MASK
            v1 = rotl(v1, 13) ^ v0
            v0 = rotl(v0, 32)
            v2 = (v2 + v3) & MASK
            v3 = rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & MASK
            v3 = rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & MASK
            v1 = rotl(v1, 17) ^ v2
            v2 = rotl(v2, 32)

    length = len(data)
    whole = length - length % 8
    for offset in range(0, whole, 8):
        (m,) = struct.unpack_from("<Q", data, offset)
        v3 ^= m
        rounds(2)
        v0 ^= m
    last = (length & 0xFF) << 56
    for index, byte in enumerate(data[whole:]):
        last |= byte << (8 * index)
    v3 ^= last
    rounds(2)
    v0 ^= last
    v2 ^= 0xFF
    rounds(4)
    return v0 ^ v1 ^ v2 ^ v3


def bucket(salt, unit_id):
    data = salt.encode("utf-8") + b"\xff" + unit_id.encode("utf-8")
    return siphash24(0, 0, data) % 10000


# The reference vector of the SipHash paper (key 00..0f, message 00..0e).
REFERENCE_KEY = bytes(range(16))
assert siphash24(
    *struct.unpack("<QQ", REFERENCE_KEY), bytes(range(15))
) == 0xA129CA6149BE45E5, "SipHash-2-4 reference vector"

SALTS = [
    "ymal_ranking:allocation",
    "reco_ymal_v1:variant:2",
    "reco_ymal_v1:allocation",
    "",
    "layer with spaces:allocation",
    "ünïcödé:variant:7",
]
UNITS = ["", "u-1", "u-18224", "s-5f1c9a", "user-99999", "ユーザー", "a" * 100, "qa-user-1"]

vectors = [
    {"salt": salt, "unit_id": unit, "bucket": bucket(salt, unit)}
    for salt in SALTS
    for unit in UNITS
]
print(json.dumps({
    "algorithm": "SipHash-2-4, key = 16 zero bytes, message = UTF-8(salt) || 0xFF || UTF-8(unit_id), u64 mod 10000",
    "buckets": 10000,
    "vectors": vectors,
}, indent=2, ensure_ascii=False))
