"""Sends ICMP echo requests from a given source address: icmp_echo.py SRC DST [COUNT]."""
import socket
import struct
import sys


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


src, dst = sys.argv[1], sys.argv[2]
count = int(sys.argv[3]) if len(sys.argv) > 3 else 5
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.bind((src, 0))
for seq in range(count):
    body = b"river-netns-probe"
    header = struct.pack("!BBHHH", 8, 0, 0, 0x7276, seq)
    packet = struct.pack("!BBHHH", 8, 0, checksum(header + body), 0x7276, seq) + body
    s.sendto(packet, (dst, 0))
