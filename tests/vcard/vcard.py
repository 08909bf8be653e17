#!/usr/bin/python3
# vcard.py - a virtual PIV smartcard for the p11agent test suite.
#
# Written from NIST SP 800-73-4 (parts 1 and 2) and ISO/IEC 7816-4.  The card
# is a TCP client of pcscd's vpcd reader driver (vsmartcard-vpcd): it
# connects to 127.0.0.1:PORT and answers what pcscd forwards.  See
# tests/vcard/README.md for the APDUs it implements.
#
#   vcard.py init --state FILE [--pin 73915846] [--puk 46290513]
#            [--serial HEX16] [--mgmt-key HEX32]
#   vcard.py run --state FILE --port PORT [--ctl PATH] [--log FILE]
#   vcard.py ctl --ctl PATH remove|insert|status|quit
#
# The card's whole state (keys, data objects, PIN/PUK and their counters,
# management key, GUID) lives in the state file, rewritten atomically (mode
# 0600) on every change: a reinserted or restarted card is the same card.
# Its private keys never leave this process and that file.
import argparse
import json
import os
import select
import socket
import struct
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# Historical bytes 80 (compact TLV) + F9 <PIV AID>: OpenSC's PIV driver
# then takes the card for a standard PIV card (its type "PIV-II HIST").
HIST = bytes.fromhex("80F9A00000030800001000")
ATR = bytes([0x3B, 0x80 | len(HIST), 0x80, 0x01]) + HIST
ATR += bytes([__import__("functools").reduce(lambda a, b: a ^ b, ATR[1:])])

PIV_AID = bytes.fromhex("A000000308000010000100")
# SELECT answer: Application Property Template (SP 800-73-4 part 2, 3.1.1)
APT = bytes.fromhex("6111" "4F06000010000100" "7907" "4F05A000000308")
# Discovery object (part 1, 3.3.2): the AID and the PIN usage policy
# (40 00: the PIV application PIN only)
DISCOVERY = bytes.fromhex("7E12" "4F0BA000000308000010000100" "5F2F024000")

SLOT_OBJ = {0x9A: "5fc105", 0x9C: "5fc10a", 0x9D: "5fc10b", 0x9E: "5fc101"}
# objects the PIN protects (printed information, fingerprints, facial
# image, iris): not present, but GET DATA says 6982 until VERIFY
PIN_OBJS = {"5fc109", "5fc103", "5fc108", "5fc121"}
ALGS = {0x07: "RSA2048", 0x11: "P256", 0x14: "P384"}
CURVES = {0x11: ec.SECP256R1(), 0x14: ec.SECP384R1()}
MGMT_ALG = 0x08  # AES-128 (SP 800-78-4 table 6-2)
PIN_MAX = PUK_MAX = 3

INS_NAMES = {0xA4: "SELECT", 0xCB: "GET-DATA", 0xC0: "GET-RESPONSE",
             0xDB: "PUT-DATA", 0x20: "VERIFY", 0x24: "CHANGE-REF",
             0x2C: "RESET-RETRY", 0x87: "GEN-AUTH", 0x47: "GENERATE"}


class SW(Exception):
	"""An ISO 7816 status word ends the command."""

	def __init__(self, sw):
		super().__init__("%04X" % sw)
		self.sw = sw


def tlv(tag, value):
	"""BER-TLV: tag bytes + definite length + value."""
	n = len(value)
	if n < 0x80:
		ln = bytes([n])
	elif n < 0x100:
		ln = bytes([0x81, n])
	else:
		ln = bytes([0x82, n >> 8, n & 0xFF])
	return tag + ln + value


def parse_tlv(data):
	"""BER-TLV list -> {tag bytes: value}; SW 6A80 if malformed."""
	out, i = {}, 0
	try:
		while i < len(data):
			t = i
			i += 1
			if data[t] & 0x1F == 0x1F:
				while data[i] & 0x80:
					i += 1
				i += 1
			tag = bytes(data[t:i])
			n = data[i]
			i += 1
			if n & 0x80:
				k = n & 0x7F
				if k < 1 or k > 3:
					raise SW(0x6A80)
				n = int.from_bytes(data[i:i + k], "big")
				i += k
			if i + n > len(data):
				raise SW(0x6A80)
			out[tag] = bytes(data[i:i + n])
			i += n
	except IndexError:
		raise SW(0x6A80)
	return out


def pin_bytes(s):
	"""A PIN or PUK as the card compares it: ASCII padded to 8 with FF."""
	return s.encode().ljust(8, b"\xff")


class Card:
	"""The card: persistent state in self.s, session state below."""

	def __init__(self, path, log):
		self.path, self.log = path, log
		with open(path) as f:
			self.s = json.load(f)
		self.loaded = {}
		self.power()

	def power(self):
		"""Power on, reset or off: the security status is lost."""
		self.pin_ok = False     # PIN verified (9A, 9D)
		self.pin_always = False  # a VERIFY just before: one 9C signature
		self.mgmt_ok = False    # 9B authenticated (PUT DATA, GENERATE)
		self.witness = None     # mutual auth step 1 sent, step 2 due
		self.challenge = None   # external auth challenge sent
		self.chain = None       # (ins, p1, p2, data) being chained
		self.pending = b""      # response bytes left for GET RESPONSE

	def save(self):
		tmp = self.path + ".tmp"
		fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
		with os.fdopen(fd, "w") as f:
			json.dump(self.s, f, indent=1)
			f.flush()
			os.fsync(f.fileno())
		os.replace(tmp, self.path)

	# --- APDU level: parsing, chaining, response chaining, log ---------
	def apdu(self, b):
		"""One command APDU -> response bytes (data + SW1 SW2)."""
		info = {}
		lc, le = 0, 0
		try:
			if len(b) < 4:
				raise SW(0x6700)
			cla, ins, p1, p2 = b[0], b[1], b[2], b[3]
			data, le = self.lengths(b)
			lc = len(data)
			info["name"] = INS_NAMES.get(ins, "INS-%02X" % ins)
			if ins == 0x87:
				info["slot"], info["alg"] = "%02X" % p2, "%02X" % p1
			if cla & ~0x10:
				raise SW(0x6E00)
			if ins != 0xC0:
				self.pending = b""
			if ins != 0x20 and ins != 0xC0 and not cla & 0x10:
				pin_always, self.pin_always = self.pin_always, False
			else:
				pin_always = self.pin_always
			# command chaining (ISO 7816-4 5.1.1.1): CLA bit 0x10
			if self.chain and self.chain[:3] != (ins, p1, p2):
				self.chain = None
			if cla & 0x10:
				if ins not in (0xDB, 0x87):
					raise SW(0x6884)
				prev = self.chain[3] if self.chain else b""
				self.chain = (ins, p1, p2, prev + data)
				info["chain"] = 1
				raise SW(0x9000)
			if self.chain:
				data = self.chain[3] + data
				self.chain = None
			resp = self.dispatch(ins, p1, p2, data, info, pin_always)
			sw = 0x9000
		except SW as e:
			resp, sw = b"", e.sw
		if sw == 0x9000 and resp:
			resp, sw = self.chunk(resp, le)
		self.logline(b, info, lc, le, len(resp), sw)
		return resp + struct.pack(">H", sw)

	@staticmethod
	def lengths(b):
		"""Short or extended Lc/Le (ISO 7816-4 5.1) -> (data, Le)."""
		body = b[4:]
		if not body:
			return b"", 0
		if len(body) == 1:
			return b"", body[0] or 256
		if body[0] != 0:
			n = body[0]
			if len(body) not in (1 + n, 2 + n):
				raise SW(0x6700)
			le = (body[1 + n] or 256) if len(body) == 2 + n else 0
			return bytes(body[1:1 + n]), le
		if len(body) == 3:
			return b"", int.from_bytes(body[1:3], "big") or 65536
		n = int.from_bytes(body[1:3], "big")
		if len(body) not in (3 + n, 5 + n):
			raise SW(0x6700)
		le = 0
		if len(body) == 5 + n:
			le = int.from_bytes(body[3 + n:], "big") or 65536
		return bytes(body[3:3 + n]), le

	def chunk(self, resp, le):
		"""Response chaining: Le bytes now, 61xx for the rest."""
		le = le or 256
		if len(resp) <= le:
			return resp, 0x9000
		self.pending = resp[le:]
		return resp[:le], 0x6100 | min(len(self.pending), 256) & 0xFF

	def logline(self, b, info, lc, le, rlen, sw):
		if not self.log:
			return
		# never the data of VERIFY, CHANGE, RESET or the 9B exchange
		f = ["%-12s" % info.get("name", "?")]
		if len(b) >= 4:
			f.append("p1=%02X p2=%02X" % (b[2], b[3]))
		for k in ("obj", "slot", "alg", "step", "chain"):
			if k in info:
				f.append("%s=%s" % (k, info[k]))
		f.append("lc=%d le=%d resp=%d sw=%04X" % (lc, le, rlen, sw))
		self.log.write(" ".join(f) + "\n")
		self.log.flush()

	def note(self, what):
		if self.log:
			self.log.write("# %s\n" % what)
			self.log.flush()

	# --- commands ------------------------------------------------------
	def dispatch(self, ins, p1, p2, data, info, pin_always):
		if ins == 0xA4:
			return self.select(p1, p2, data)
		if ins == 0xC0:
			return self.get_response()
		if ins == 0xCB:
			return self.get_data(p1, p2, data, info)
		if ins == 0xDB:
			return self.put_data(p1, p2, data, info)
		if ins == 0x20:
			return self.verify(p1, p2, data)
		if ins == 0x24:
			return self.change(p2, data)
		if ins == 0x2C:
			return self.reset_retry(p2, data)
		if ins == 0x87:
			return self.gen_auth(p1, p2, data, info, pin_always)
		if ins == 0x47:
			return self.generate(p2, data, info)
		raise SW(0x6D00)

	# SELECT 00 A4 04 00 Lc AID: any prefix of the PIV AID (at least its
	# RID) selects the application; the answer is its property template.
	def select(self, p1, p2, aid):
		if p1 != 0x04 or len(aid) < 5 or not PIV_AID.startswith(aid):
			raise SW(0x6A82)
		return APT

	# GET RESPONSE 00 C0 00 00 Le: the next part of the last answer.
	def get_response(self):
		if not self.pending:
			raise SW(0x6985)
		return self.pending

	# GET DATA 00 CB 3F FF Lc 5C <tag>: 53 <object> (7E: the discovery
	# object itself).
	def get_data(self, p1, p2, data, info):
		if (p1, p2) != (0x3F, 0xFF):
			raise SW(0x6A86)
		tag = parse_tlv(data).get(b"\x5c")
		if tag is None:
			raise SW(0x6A80)
		info["obj"] = tag.hex().upper()
		if tag == b"\x7e":
			return DISCOVERY
		obj = self.s["objects"].get(tag.hex())
		if tag.hex() in PIN_OBJS and not self.pin_ok:
			raise SW(0x6982)
		if obj is None:
			raise SW(0x6A82)
		return tlv(b"\x53", bytes.fromhex(obj))

	# PUT DATA 00 DB 3F FF Lc 5C <tag> 53 <object> (chained): behind 9B.
	# An empty 53 deletes the object.
	def put_data(self, p1, p2, data, info):
		if (p1, p2) != (0x3F, 0xFF):
			raise SW(0x6A86)
		t = parse_tlv(data)
		tag, obj = t.get(b"\x5c"), t.get(b"\x53")
		if tag is None or obj is None or not tag.startswith(b"\x5f\xc1"):
			raise SW(0x6A80)
		info["obj"] = tag.hex().upper()
		if not self.mgmt_ok:
			raise SW(0x6982)
		if obj:
			self.s["objects"][tag.hex()] = obj.hex()
		else:
			self.s["objects"].pop(tag.hex(), None)
		self.save()
		return b""

	def tries(self, which):
		return self.s[which + "_tries"]

	def check_ref(self, which, given):
		"""Compare a PIN/PUK, counting the retry counter down."""
		if self.tries(which) == 0:
			raise SW(0x6983)
		if given != pin_bytes(self.s[which]):
			self.s[which + "_tries"] -= 1
			self.save()
			raise SW(0x63C0 | self.tries(which))
		if self.tries(which) != PIN_MAX:
			self.s[which + "_tries"] = PIN_MAX
			self.save()

	@staticmethod
	def new_ref(b, minlen):
		s = b.rstrip(b"\xff")
		if not minlen <= len(s) <= 8 or not s.isdigit():
			raise SW(0x6A80)
		return s.decode()

	# VERIFY 00 20 00 80 08 <PIN|FF..>: the PIV application PIN.  Without
	# data: 9000 when verified, 63Cx (x tries left) or 6983 when blocked.
	# P1=FF: back to not verified.
	def verify(self, p1, p2, data):
		if p2 != 0x80:
			raise SW(0x6A88)
		if p1 == 0xFF:
			self.pin_ok = self.pin_always = False
			return b""
		if p1 != 0x00:
			raise SW(0x6A86)
		if not data:
			if self.tries("pin") == 0:
				raise SW(0x6983)
			if not self.pin_ok:
				raise SW(0x63C0 | self.tries("pin"))
			return b""
		if len(data) != 8:
			raise SW(0x6A80)
		self.pin_ok = self.pin_always = False
		self.check_ref("pin", data)
		self.pin_ok = self.pin_always = True
		return b""

	# CHANGE REFERENCE DATA 00 24 00 80|81 10 <old 8><new 8>
	def change(self, p2, data):
		which = {0x80: "pin", 0x81: "puk"}.get(p2)
		if which is None:
			raise SW(0x6A88)
		if len(data) != 16:
			raise SW(0x6A80)
		self.check_ref(which, data[:8])
		self.s[which] = self.new_ref(data[8:], 6 if which == "pin" else 6)
		self.save()
		return b""

	# RESET RETRY COUNTER 00 2C 00 80 10 <PUK 8><new PIN 8>
	def reset_retry(self, p2, data):
		if p2 != 0x80:
			raise SW(0x6A88)
		if len(data) != 16:
			raise SW(0x6A80)
		self.check_ref("puk", data[:8])
		self.s["pin"] = self.new_ref(data[8:], 6)
		self.s["pin_tries"] = PIN_MAX
		self.save()
		return b""

	def mgmt_cipher(self):
		return Cipher(algorithms.AES(bytes.fromhex(self.s["mgmt_key"])),
		    modes.ECB())

	# GENERAL AUTHENTICATE 00 87 <alg> <key> Lc 7C {...} (chained)
	def gen_auth(self, alg, key, data, info, pin_always):
		dyn = parse_tlv(parse_tlv(data).get(b"\x7c", b"\xff"))
		if key == 0x9B:
			return self.mgmt_auth(alg, dyn, info)
		self.witness = self.challenge = None
		k = self.s["keys"].get("%02x" % key)
		if key not in SLOT_OBJ:
			raise SW(0x6A86)
		if k is None or k["alg"] != alg:
			raise SW(0x6A80)
		if key == 0x9C:
			if not pin_always:
				raise SW(0x6982)
		elif key != 0x9E and not self.pin_ok:
			raise SW(0x6982)
		c = dyn.get(b"\x81")
		if dyn.get(b"\x82") != b"" or c is None:
			raise SW(0x6A80)
		priv = self.private_key(k["pem"])
		if alg == 0x07:
			# raw RSA: the card applies no padding (part 2, 3.2.4)
			if len(c) != 256:
				raise SW(0x6A80)
			n = priv.private_numbers()
			m = int.from_bytes(c, "big")
			if m >= n.public_numbers.n:
				raise SW(0x6A80)
			# CRT: m^d mod n from m^dp mod p and m^dq mod q
			a = pow(m, n.dmp1, n.p)
			b = pow(m, n.dmq1, n.q)
			s = b + n.q * ((n.iqmp * (a - b)) % n.p)
			sig = s.to_bytes(256, "big")
		else:
			# ECDSA over the hash as given: truncated or left-padded to
			# the curve's size, as ECDSA treats it anyway
			size = 32 if alg == 0x11 else 48
			h = c[:size].rjust(size, b"\0")
			sig = priv.sign(h, ec.ECDSA(utils.Prehashed(
			    hashes.SHA256() if size == 32 else hashes.SHA384())))
		return tlv(b"\x7c", tlv(b"\x82", sig))

	def private_key(self, pem):
		# loading checks an RSA key (~50 ms): once per key
		if pem not in self.loaded:
			self.loaded[pem] = serialization.load_pem_private_key(
			    pem.encode(), None)
		return self.loaded[pem]

	# 9B, the card management key (part 2, appendix A.1, A.2):
	#  mutual:   7C{80 00}         -> 7C{80 E(K, W)}
	#            7C{80 W, 81 C}    -> 7C{82 E(K, C)}
	#  external: 7C{81 00}         -> 7C{81 C}
	#            7C{82 E(K, C)}    -> 9000
	def mgmt_auth(self, alg, dyn, info):
		if alg != MGMT_ALG:
			raise SW(0x6A86)
		witness, self.witness = self.witness, None
		challenge, self.challenge = self.challenge, None
		if dyn.get(b"\x80") == b"" and len(dyn) == 1:
			info["step"] = "witness"
			self.mgmt_ok = False
			self.witness = os.urandom(16)
			e = self.mgmt_cipher().encryptor()
			return tlv(b"\x7c", tlv(b"\x80", e.update(self.witness)))
		if dyn.get(b"\x81") == b"" and len(dyn) == 1:
			info["step"] = "challenge"
			self.mgmt_ok = False
			self.challenge = os.urandom(16)
			return tlv(b"\x7c", tlv(b"\x81", self.challenge))
		if b"\x80" in dyn and b"\x81" in dyn:
			info["step"] = "mutual"
			if witness is None or dyn[b"\x80"] != witness:
				raise SW(0x6982)
			c = dyn[b"\x81"]
			if len(c) != 16:
				raise SW(0x6A80)
			self.mgmt_ok = True
			e = self.mgmt_cipher().encryptor()
			return tlv(b"\x7c", tlv(b"\x82", e.update(c)))
		if b"\x82" in dyn and len(dyn) == 1:
			info["step"] = "external"
			d = self.mgmt_cipher().decryptor()
			if challenge is None or len(dyn[b"\x82"]) != 16 or \
			    d.update(dyn[b"\x82"]) != challenge:
				raise SW(0x6982)
			self.mgmt_ok = True
			return b""
		raise SW(0x6A80)

	# GENERATE ASYMMETRIC KEY PAIR 00 47 00 <slot> Lc AC{80 <alg>}: behind
	# 9B; answers only the public key: 7F49{81 n, 82 e} or 7F49{86 point}.
	def generate(self, slot, data, info):
		info["slot"] = "%02X" % slot
		if slot not in SLOT_OBJ:
			raise SW(0x6A86)
		t = parse_tlv(parse_tlv(data).get(b"\xac", b"\xff"))
		alg = t.get(b"\x80", b"\0")[0]
		info["alg"] = "%02X" % alg
		if alg not in ALGS:
			raise SW(0x6A80)
		if not self.mgmt_ok:
			raise SW(0x6982)
		if alg == 0x07:
			priv = rsa.generate_private_key(65537, 2048)
			pn = priv.public_key().public_numbers()
			pub = tlv(b"\x81", pn.n.to_bytes(256, "big")) + \
			    tlv(b"\x82", pn.e.to_bytes(3, "big"))
		else:
			priv = ec.generate_private_key(CURVES[alg])
			pub = tlv(b"\x86", priv.public_key().public_bytes(
			    serialization.Encoding.X962,
			    serialization.PublicFormat.UncompressedPoint))
		pem = priv.private_bytes(serialization.Encoding.PEM,
		    serialization.PrivateFormat.PKCS8,
		    serialization.NoEncryption()).decode()
		self.s["keys"]["%02x" % slot] = {"alg": alg, "pem": pem}
		self.save()
		return tlv(b"\x7f\x49", pub)


def init_state(a):
	"""A new card: PIN, PUK, management key, GUID, CCC, CHUID, history."""
	serial = bytes.fromhex(a.serial) if a.serial else os.urandom(8)
	if len(serial) != 8:
		sys.exit("vcard.py: --serial must be 16 hex digits")
	# the GUID (RFC 4122 form is not checked by OpenSC); OpenSC's token
	# serial is the hex of its last 8 bytes
	guid = bytes.fromhex("7063617264000000") + serial
	mgmt = bytes.fromhex(a.mgmt_key)
	if len(mgmt) != 16:
		sys.exit("vcard.py: --mgmt-key must be 32 hex digits (AES-128)")
	for what, v, n in (("pin", a.pin, 6), ("puk", a.puk, 8)):
		if not 6 <= len(v) <= 8 or not v.isdigit():
			sys.exit("vcard.py: --%s must be 6 to 8 digits" % what)
	# CHUID (part 1, 3.1.2): GUID 34, expiration 35, empty signature 3E
	chuid = tlv(b"\x34", guid) + tlv(b"\x35", b"20991231") + \
	    tlv(b"\x3e", b"") + tlv(b"\xfe", b"")
	# CCC (part 1, 3.1.1): card identifier F0, versions, no extensions
	ccc = tlv(b"\xf0", bytes.fromhex("a000000116ff02") + serial +
	    b"\0" * 6) + tlv(b"\xf1", b"\x21") + tlv(b"\xf2", b"\x21") + \
	    tlv(b"\xf3", b"") + tlv(b"\xf4", b"\0") + tlv(b"\xf5", b"\x10") + \
	    tlv(b"\xf6", b"") + tlv(b"\xf7", b"") + tlv(b"\xfa", b"") + \
	    tlv(b"\xfb", b"") + tlv(b"\xfc", b"") + tlv(b"\xfd", b"") + \
	    tlv(b"\xfe", b"")
	# key history (part 1, 3.3.3): no retired keys
	hist = tlv(b"\xc1", b"\0") + tlv(b"\xc2", b"\0") + tlv(b"\xfe", b"")
	state = {"pin": a.pin, "puk": a.puk, "pin_tries": PIN_MAX,
	    "puk_tries": PUK_MAX, "mgmt_key": mgmt.hex(), "guid": guid.hex(),
	    "serial": serial.hex(), "keys": {}, "objects": {
	    "5fc102": chuid.hex(), "5fc107": ccc.hex(), "5fc10c": hist.hex()}}
	c = Card.__new__(Card)
	c.path, c.s = a.state, state
	c.save()


class Runner:
	"""vpcd connection, control socket and the event loop."""

	def __init__(self, a):
		self.log = open(a.log, "a") if a.log else None
		self.card = Card(a.state, self.log)
		self.port = a.port
		self.inserted = True
		self.sock = None
		self.buf = b""
		self.ctl = None
		self.clients = {}
		if a.ctl:
			if os.path.exists(a.ctl):
				os.unlink(a.ctl)
			self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
			self.ctl.bind(a.ctl)
			os.chmod(a.ctl, 0o600)
			self.ctl.listen(4)

	def connect(self):
		s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
		try:
			s.connect(("127.0.0.1", self.port))
		except OSError:
			s.close()
			return
		s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
		self.sock, self.buf = s, b""
		self.card.power()
		self.card.note("connected to vpcd")

	def disconnect(self, why):
		if self.sock:
			self.sock.close()
			self.sock = None
			self.card.power()
			self.card.note(why)

	def frames(self):
		"""Reads what vpcd sent; answers each complete frame."""
		d = self.sock.recv(65536)
		# Debian's vpcd sends length and body in two writes: without
		# QUICKACK each APDU waits ~40 ms for the delayed ACK
		if d:
			self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
		if not d:
			self.disconnect("vpcd closed the connection")
			return
		self.buf += d
		while len(self.buf) >= 2:
			n = struct.unpack(">H", self.buf[:2])[0]
			if len(self.buf) < 2 + n:
				break
			msg, self.buf = self.buf[2:2 + n], self.buf[2 + n:]
			out = self.message(msg)
			# one write per reply, never an empty frame
			if out:
				self.sock.sendall(struct.pack(">H", len(out)) + out)

	def message(self, msg):
		if len(msg) == 1:
			# control: 0 power off, 1 power on, 2 reset, 4 ATR
			if msg[0] in (0, 1, 2):
				self.card.power()
				return b""
			return ATR if msg[0] == 4 else b""
		if not msg:
			return b""
		return self.card.apdu(msg)

	def command(self, c, line):
		cmd = line.strip()
		out = "ok"
		if cmd == "remove":
			self.inserted = False
			self.disconnect("removed")
		elif cmd == "insert":
			self.inserted = True
			self.card.note("inserted")
			if not self.sock:
				self.connect()
		elif cmd == "status":
			s = self.card.s
			out = "inserted=%d connected=%d pin_tries=%d puk_tries=%d " \
			    "pin_verified=%d serial=%s keys=%s" % (self.inserted,
			    self.sock is not None, s["pin_tries"], s["puk_tries"],
			    self.card.pin_ok, s["serial"],
			    ",".join(sorted(s["keys"])) or "-")
		elif cmd != "quit":
			out = "error: unknown command %r (remove, insert, status, " \
			    "quit)" % cmd
		# one command a connection: the answer, then close
		try:
			c.sendall(out.encode() + b"\n")
		except OSError:
			pass
		del self.clients[c]
		c.close()
		if cmd == "quit":
			self.card.note("quit")
			sys.exit(0)

	def loop(self):
		while True:
			if self.inserted and not self.sock:
				self.connect()
			r = [x for x in [self.sock, self.ctl] if x]
			r += list(self.clients)
			# not connected: try again in 50 ms (pcscd restarting)
			timeout = None if self.sock or not self.inserted else 0.05
			ready, _, _ = select.select(r, [], [], timeout)
			for x in ready:
				if x is self.sock:
					try:
						self.frames()
					except OSError:
						self.disconnect("vpcd connection lost")
				elif x is self.ctl:
					c, _ = self.ctl.accept()
					self.clients[c] = b""
				else:
					self.client(x)

	def client(self, c):
		try:
			d = c.recv(4096)
		except OSError:
			d = b""
		if not d:
			del self.clients[c]
			c.close()
			return
		self.clients[c] += d
		if b"\n" in self.clients[c]:
			line = self.clients[c].split(b"\n", 1)[0]
			self.command(c, line.decode(errors="replace"))


def main():
	p = argparse.ArgumentParser(description="virtual PIV card for vpcd")
	sub = p.add_subparsers(dest="cmd", required=True)
	i = sub.add_parser("init", help="create a new card's state file")
	i.add_argument("--state", required=True)
	i.add_argument("--pin", default="73915846")
	i.add_argument("--puk", default="46290513")
	i.add_argument("--serial", help="16 hex digits (default: random)")
	i.add_argument("--mgmt-key", default="000102030405060708090a0b0c0d0e0f",
	    help="AES-128 9B key, 32 hex digits")
	r = sub.add_parser("run", help="be the card in vpcd's reader")
	r.add_argument("--state", required=True)
	r.add_argument("--port", type=int, required=True)
	r.add_argument("--ctl", help="control socket path")
	r.add_argument("--log", help="APDU log file")
	c = sub.add_parser("ctl", help="send a command to a running card")
	c.add_argument("--ctl", required=True)
	c.add_argument("command", choices=["remove", "insert", "status", "quit"])
	a = p.parse_args()
	if a.cmd == "ctl":
		s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
		s.settimeout(10)
		s.connect(a.ctl)
		s.sendall(a.command.encode() + b"\n")
		out = b""
		while True:
			d = s.recv(4096)
			if not d:
				break
			out += d
		sys.stdout.write(out.decode())
		sys.exit(0 if out.startswith((b"ok", b"inserted=")) else 1)
	if a.cmd == "init":
		init_state(a)
		return
	try:
		Runner(a).loop()
	except KeyboardInterrupt:
		pass


if __name__ == "__main__":
	main()
