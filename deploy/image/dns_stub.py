#!/usr/bin/env python3
"""A tiny authoritative DNS server for the image test (scripts/image --check): it answers
A queries for names under one zone (default cluster.local) with one fixed address, and
NXDOMAIN for everything else, so the test can prove that the static ferry-agent resolves
in-cluster names through /etc/resolv.conf (nameserver + search list + ndots), the way it
does in a pod, without any shared library for NSS. UDP only; it logs each query it answers.

Usage: dns_stub.py LISTEN_IP ANSWER_IP [ZONE]    (listens on LISTEN_IP:53, runs until killed)
"""
import socket
import struct
import sys


def parse_name(packet, offset):
    labels = []
    while True:
        length = packet[offset]
        offset += 1
        if length == 0:
            return ".".join(labels), offset
        labels.append(packet[offset:offset + length].decode("ascii", "replace"))
        offset += length


def main():
    listen, answer = sys.argv[1], sys.argv[2]
    zone = (sys.argv[3] if len(sys.argv) > 3 else "cluster.local").lower().strip(".")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((listen, 53))
    print(f"dns_stub listening on {listen}:53 zone {zone}", flush=True)
    while True:
        packet, peer = sock.recvfrom(512)
        if len(packet) < 12:
            continue
        ident, _flags, qdcount = struct.unpack("!HHH", packet[:6])
        if qdcount != 1:
            continue
        name, end = parse_name(packet, 12)
        qtype, _qclass = struct.unpack("!HH", packet[end:end + 4])
        question = packet[12:end + 4]
        known = name.lower() == zone or name.lower().endswith("." + zone)
        # QR=1, AA=1, RD copied, RA=1; RCODE 0 (NOERROR) or 3 (NXDOMAIN)
        flags = 0x8400 | (_flags & 0x0100) | 0x0080 | (0 if known else 3)
        answers = b""
        if known and qtype == 1:
            # name pointer to offset 12, type A, class IN, TTL 5, 4 bytes of address
            answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 5, 4) + socket.inet_aton(answer)
        ancount = 1 if answers else 0
        header = struct.pack("!HHHHHH", ident, flags, 1, ancount, 0, 0)
        sock.sendto(header + question + answers, peer)
        print(f"query {name} type {qtype} -> {'A ' + answer if answers else ('NODATA' if known else 'NXDOMAIN')}", flush=True)


if __name__ == "__main__":
    main()
