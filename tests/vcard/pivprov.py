#!/usr/bin/python3
# pivprov.py - provision a PIV card over PC/SC (pyscard), for the tests.
#
#   pivprov.py [--reader SUBSTRING] [--mgmt-key HEX] COMMAND ...
#     genkey SLOT ALG --out pub.pem   9B mutual authentication, then
#                                     GENERATE ASYMMETRIC KEY PAIR; writes
#                                     the public key (ALG: rsa2048, p256,
#                                     p384)
#     put-cert SLOT cert.pem|cert.der 9B authentication, then PUT DATA of
#                                     the slot's certificate container
#     change-pin OLD NEW              CHANGE REFERENCE DATA of the PIN
#     unblock PUK NEWPIN              RESET RETRY COUNTER with the PUK
#     tries                           prints the PIN tries left (or
#                                     "verified" when it is)
#     sign SLOT ALG HASH --out SIG [--pin PIN] [--count N] [--time]
#                                     GENERAL AUTHENTICATE over the
#                                     hash in file HASH (RSA: PKCS#1 v1.5
#                                     with SHA-256's DigestInfo, made
#                                     here), N times after one VERIFY;
#                                     SIG: the last signature (EC: DER)
#
# SLOT is 9a, 9c, 9d or 9e.  The management key is AES-128 (alg 08).
# libpcsclite honours PCSCLITE_CSOCK_NAME: the tests' private pcscd.
import argparse
import os
import sys
import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from smartcard.Exceptions import SmartcardException
from smartcard.System import readers

PIV_AID = bytes.fromhex("A000000308000010000100")
SLOT_OBJ = {0x9A: "5FC105", 0x9C: "5FC10A", 0x9D: "5FC10B", 0x9E: "5FC101"}
ALGS = {"rsa2048": 0x07, "p256": 0x11, "p384": 0x14}
CURVES = {0x11: ec.SECP256R1(), 0x14: ec.SECP384R1()}
SW_TEXT = {0x6982: "security status not satisfied", 0x6983: "blocked",
           0x6A80: "incorrect data", 0x6A82: "not found",
           0x6A86: "incorrect P1/P2", 0x6A88: "reference not found",
           0x6D00: "instruction not supported"}


class CardError(Exception):
	pass


def tlv(tag, value):
	n = len(value)
	ln = bytes([n]) if n < 0x80 else bytes([0x81, n]) if n < 0x100 \
	    else bytes([0x82, n >> 8, n & 0xFF])
	return tag + ln + value


def parse_tlv(data):
	out, i = {}, 0
	while i < len(data):
		t = i
		i += 1
		if data[t] & 0x1F == 0x1F:
			while data[i] & 0x80:
				i += 1
			i += 1
		tag, n = bytes(data[t:i]), data[i]
		i += 1
		if n & 0x80:
			k = n & 0x7F
			n = int.from_bytes(data[i:i + k], "big")
			i += k
		out[tag] = bytes(data[i:i + n])
		i += n
	return out


def swtext(sw):
	if sw >> 8 == 0x63 and sw & 0xF0 == 0xC0:
		return "wrong, %d tries left" % (sw & 0x0F)
	return SW_TEXT.get(sw, "error")


class Piv:
	def __init__(self, want):
		rs = [r for r in readers() if want in str(r)]
		if not rs:
			raise CardError("no PC/SC reader matching %r (readers: %s)" %
			    (want, ", ".join(map(str, readers())) or "none"))
		self.conn = rs[0].createConnection()
		try:
			self.conn.connect()
		except SmartcardException as e:
			raise CardError("reader %s: %s" % (rs[0], e))
		self.send("SELECT", 0xA4, 0x04, 0x00, PIV_AID)

	def transmit(self, apdu):
		data, sw1, sw2 = self.conn.transmit(list(apdu))
		return bytes(data), (sw1 << 8) | sw2

	def send(self, what, ins, p1, p2, data=b"", ok=(0x9000,), le=True):
		"""Command chaining out (255-byte parts), 61xx back."""
		while len(data) > 255:
			_, sw = self.transmit(bytes([0x10, ins, p1, p2, 255]) +
			    data[:255])
			if sw != 0x9000:
				raise CardError("%s: card said %04X (%s)" %
				    (what, sw, swtext(sw)))
			data = data[255:]
		apdu = bytes([0, ins, p1, p2])
		if data:
			apdu += bytes([len(data)]) + data
		resp, sw = self.transmit(apdu + (b"\0" if le else b""))
		while sw >> 8 == 0x61:
			more, sw = self.transmit(bytes([0, 0xC0, 0, 0, sw & 0xFF]))
			resp += more
		if sw not in ok:
			raise CardError("%s: card said %04X (%s)" %
			    (what, sw, swtext(sw)))
		return resp, sw

	def mgmt_auth(self, key):
		"""Mutual authentication with the 9B key (SP 800-73-4 part 2,
		appendix A.2): decrypt the card's witness, send it back with a
		challenge, check the card's encryption of the challenge."""
		aes = Cipher(algorithms.AES(key), modes.ECB())
		r, _ = self.send("9B witness", 0x87, 0x08, 0x9B,
		    bytes.fromhex("7C028000"))
		w = parse_tlv(parse_tlv(r)[b"\x7c"])[b"\x80"]
		witness = aes.decryptor().update(w)
		chal = os.urandom(16)
		r, _ = self.send("9B authentication", 0x87, 0x08, 0x9B,
		    tlv(b"\x7c", tlv(b"\x80", witness) + tlv(b"\x81", chal)))
		got = parse_tlv(parse_tlv(r)[b"\x7c"])[b"\x82"]
		if got != aes.encryptor().update(chal):
			raise CardError("9B: the card's answer to our challenge is "
			    "wrong: not the card we hold the key of")


def slot_arg(s):
	try:
		v = int(s, 16)
	except ValueError:
		v = -1
	if v not in SLOT_OBJ:
		raise argparse.ArgumentTypeError("slot %r: use 9a, 9c, 9d or 9e" % s)
	return v


def genkey(piv, a):
	alg = ALGS[a.alg]
	piv.mgmt_auth(a.mgmt_key)
	r, _ = piv.send("GENERATE %02X" % a.slot, 0x47, 0x00, a.slot,
	    tlv(b"\xac", tlv(b"\x80", bytes([alg]))))
	t = parse_tlv(parse_tlv(r)[b"\x7f\x49"])
	if alg == 0x07:
		pub = rsa.RSAPublicNumbers(int.from_bytes(t[b"\x82"], "big"),
		    int.from_bytes(t[b"\x81"], "big")).public_key()
	else:
		pub = ec.EllipticCurvePublicKey.from_encoded_point(CURVES[alg],
		    t[b"\x86"])
	pem = pub.public_bytes(serialization.Encoding.PEM,
	    serialization.PublicFormat.SubjectPublicKeyInfo)
	with open(a.out, "wb") as f:
		f.write(pem)


def put_cert(piv, a):
	with open(a.cert, "rb") as f:
		b = f.read()
	try:
		cert = x509.load_pem_x509_certificate(b) if b"-----BEGIN" in b \
		    else x509.load_der_x509_certificate(b)
	except ValueError as e:
		raise CardError("%s: not a certificate: %s" % (a.cert, e))
	der = cert.public_bytes(serialization.Encoding.DER)
	# certificate container (part 1, 3.3.1): 70 cert, 71 CertInfo, FE
	obj = tlv(b"\x70", der) + tlv(b"\x71", b"\0") + tlv(b"\xfe", b"")
	piv.mgmt_auth(a.mgmt_key)
	piv.send("PUT DATA %s" % SLOT_OBJ[a.slot], 0xDB, 0x3F, 0xFF,
	    tlv(b"\x5c", bytes.fromhex(SLOT_OBJ[a.slot])) + tlv(b"\x53", obj),
	    le=False)


def sign(piv, a):
	alg = ALGS[a.alg]
	with open(a.hash, "rb") as f:
		h = f.read()
	if alg == 0x07:
		if len(h) != 32:
			raise CardError("%s: RSA signs a SHA-256 hash (32 bytes)" % a.hash)
		t = bytes.fromhex("3031300d060960864801650304020105000420") + h
		h = b"\0\1" + b"\xff" * (256 - 3 - len(t)) + b"\0" + t
	if a.pin:
		piv.send("VERIFY", 0x20, 0x00, 0x80, pad(a.pin, "the PIN"), le=False)
	t0 = time.monotonic()
	for i in range(a.count):
		r, _ = piv.send("GENERAL AUTHENTICATE %02X (%d of %d)" %
		    (a.slot, i + 1, a.count), 0x87, alg, a.slot,
		    tlv(b"\x7c", tlv(b"\x82", b"") + tlv(b"\x81", h)))
	if a.time:
		print("%d signatures, %.2f ms each" % (a.count,
		    (time.monotonic() - t0) * 1000 / a.count))
	sig = parse_tlv(parse_tlv(r)[b"\x7c"])[b"\x82"]
	with open(a.out, "wb") as f:
		f.write(sig)


def pad(s, what):
	if not 6 <= len(s) <= 8 or not s.isdigit():
		raise CardError("%s must be 6 to 8 digits" % what)
	return s.encode().ljust(8, b"\xff")


def main():
	p = argparse.ArgumentParser(description="provision a PIV card")
	p.add_argument("--reader", default="", help="reader name substring")
	p.add_argument("--mgmt-key", type=bytes.fromhex,
	    default=bytes.fromhex("000102030405060708090a0b0c0d0e0f"))
	sub = p.add_subparsers(dest="cmd", required=True)
	g = sub.add_parser("genkey")
	g.add_argument("slot", type=slot_arg)
	g.add_argument("alg", choices=sorted(ALGS))
	g.add_argument("--out", required=True)
	c = sub.add_parser("put-cert")
	c.add_argument("slot", type=slot_arg)
	c.add_argument("cert")
	c = sub.add_parser("change-pin")
	c.add_argument("old")
	c.add_argument("new")
	c = sub.add_parser("unblock")
	c.add_argument("puk")
	c.add_argument("newpin")
	sub.add_parser("tries")
	c = sub.add_parser("sign")
	c.add_argument("slot", type=slot_arg)
	c.add_argument("alg", choices=sorted(ALGS))
	c.add_argument("hash")
	c.add_argument("--out", required=True)
	c.add_argument("--pin")
	c.add_argument("--count", type=int, default=1)
	c.add_argument("--time", action="store_true",
	    help="print the time a signature took")
	a = p.parse_args()
	try:
		if len(a.mgmt_key) != 16:
			raise CardError("--mgmt-key: 32 hex digits (AES-128)")
		piv = Piv(a.reader)
		if a.cmd == "genkey":
			genkey(piv, a)
		elif a.cmd == "put-cert":
			put_cert(piv, a)
		elif a.cmd == "change-pin":
			piv.send("CHANGE REFERENCE DATA", 0x24, 0x00, 0x80,
			    pad(a.old, "the old PIN") + pad(a.new, "the new PIN"),
			    le=False)
		elif a.cmd == "unblock":
			piv.send("RESET RETRY COUNTER", 0x2C, 0x00, 0x80,
			    pad(a.puk, "the PUK") + pad(a.newpin, "the new PIN"),
			    le=False)
		elif a.cmd == "sign":
			sign(piv, a)
		elif a.cmd == "tries":
			_, sw = piv.send("VERIFY", 0x20, 0x00, 0x80,
			    ok=tuple([0x9000, 0x6983] + [0x63C0 | i for i in range(16)]),
			    le=False)
			# verified (9000): this card session has the PIN already
			print("verified" if sw == 0x9000 else
			    0 if sw == 0x6983 else sw & 0x0F)
	except (CardError, SmartcardException, OSError) as e:
		sys.exit("pivprov.py: %s" % e)


if __name__ == "__main__":
	main()
