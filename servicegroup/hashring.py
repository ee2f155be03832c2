"""A consistent-hash ring: ``{member: weight}`` in, ``owner(key)`` out.

Pure and immutable, no I/O. Every process that sees the same members
builds the same ring (stable hashes, never Python's salted ``hash()``;
member order is irrelevant), so a fleet agrees on ownership without
talking. :mod:`servicegroup.ring` keeps one up to date with a group's live
members; the matchmaker hashes keys on one too.

Why the ring is not the textbook one
------------------------------------
With independent random points per member, a member's share of the ring
has a relative spread of about ``1/sqrt(points)``. Measured at 10 members
with 128 points, max/mean load is 1.14 for a typical fleet and above 1.10
for 15 fleets in 20 (``python -m bench.ring``): "128 points keeps load
within 10 %" does not hold. Plain rings stay under 1.10 only from ~1,024
points per member, and 1,000 members x 1,024 points take 230-360 ms to
rebuild here (this same code with ``probes=1``), against a 50 ms budget.

So each key is looked up at :data:`DEFAULT_PROBES` positions (multi-probe
consistent hashing, Appleton & O'Reilly 2015) and goes to the member whose
point is nearest after any of them. With 128 points and 4 probes, max/mean
at 10 members is ~1.05 (p90 ~1.07), as good as a 1,024-point ring, while the
ring keeps 128 points per member. Minimal disruption is exact, not
approximate: a member's distance to a key depends only on that member's own
points, so a join moves keys only *to* the joiner and a leave moves only the
leaver's keys. Weights stay proportional (each member's nearest distance is
an exponential race with rate proportional to its points).

Encoding (why floats): a point is a float in [1, 2) whose 52-bit mantissa
holds a 36-bit ring position above a 16-bit member index. Sorting floats
takes CPython's fast float comparison path (about half the time of 64-bit
ints); each member's sorted points are cached by (member, count), so a
rebuild is a concatenation plus a merge of pre-sorted runs.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import logging
import math
import sys
from array import array
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from servicegroup import errors

LOG = logging.getLogger(__name__)

Key = str | bytes

#: Points (virtual nodes) per member of weight 1. Raising it does not help
#: balance much beyond what the probes give and slows every rebuild.
DEFAULT_POINTS = 128
#: Ring positions looked up per key; see the module docstring for why 4.
DEFAULT_PROBES = 4
MAX_PROBES = 12
#: Weights beyond this are refused by :class:`HashRing` (and clamped by
#: :class:`Partitioner`): one member advertising ``weight=1e6`` must not make
#: every process of the fleet build a ring of 128 million points.
MAX_WEIGHT = 100.0
#: Member indexes live in the 16 low mantissa bits of a point.
MAX_MEMBERS = 1 << 16

_POS_BITS = 36
_PROBE_BYTES = 5  # 40 bits of hash per probe, the top 36 used
_SCALE = 2.0**-_POS_BITS
#: Byte 6 of a little-endian double in [1, 2): exponent bits 0xF0 and the
#: top 4 bits of the mantissa.
_HIGH_NIBBLE = bytes(0xF0 | (b & 0x0F) for b in range(256))
_BIG_ENDIAN = sys.byteorder == "big"


class EmptyRing(errors.ServiceGroupError, LookupError):
    """The ring has no member with a positive weight: nobody owns anything."""


def key_bytes(key: Key) -> bytes:
    """Keys hash as UTF-8 bytes, so ``"id-1"`` and ``b"id-1"`` are one key."""
    if isinstance(key, str):
        return key.encode("utf-8", "surrogatepass")
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise TypeError(f"ring keys are str or bytes, not {type(key).__name__}")


@functools.lru_cache(maxsize=8192)
def _member_run(member: str, count: int) -> bytes:
    """The sorted points of one member as little-endian doubles, index 0.

    A pure function of (member, count), hence cacheable across rebuilds and
    rings. ``shake_128`` is an extendable-output hash: the first 128 points
    of a weight-2 member are the 128 points of the weight-1 member, so
    changing a weight only moves keys to or from that member.
    """
    rnd = hashlib.shake_128(member.encode("utf-8", "surrogatepass")).digest(_PROBE_BYTES * count)
    buf = bytearray(8 * count)
    for j in range(_PROBE_BYTES):  # random bytes -> mantissa bytes 2..6
        buf[2 + j :: 8] = rnd[j::_PROBE_BYTES]
    buf[6::8] = bytes(buf[6::8]).translate(_HIGH_NIBBLE)
    buf[7::8] = b"\x3f" * count
    run = array("d")
    run.frombytes(bytes(buf))
    if _BIG_ENDIAN:
        run.byteswap()
    run = array("d", sorted(run))
    if _BIG_ENDIAN:
        run.byteswap()
    return run.tobytes()


def _check_weight(member: str, weight: Any) -> float:
    try:
        value = float(weight)
    except (TypeError, ValueError):
        raise ValueError(f"weight of {member!r} is not a number: {weight!r}") from None
    if not math.isfinite(value) or value < 0 or value > MAX_WEIGHT:
        raise ValueError(f"weight of {member!r} must be within 0..{MAX_WEIGHT:g}, not {weight!r}")
    return value


#: Capability that holds a member's weight on the ring (default 1).
WEIGHT_CAPABILITY = "weight"


def capability_weight(
    capabilities: Mapping[str, Any] | None,
    *,
    member: str = "?",
    warned: set[tuple[str, str]] | None = None,
    group: str = "?",
) -> float:
    """A member's ring weight from its capabilities, never raising.

    One member advertising a bad weight must not break the ring of the whole
    fleet, so a non-number or negative value falls back to 1 and a huge one
    is clamped to :data:`MAX_WEIGHT`, logged once per (member, value) when a
    *warned* set is given. 0 is kept: it drains a member.
    """
    raw = capabilities.get(WEIGHT_CAPABILITY, 1) if isinstance(capabilities, Mapping) else 1
    try:
        return _check_weight(member, raw)
    except ValueError as exc:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = math.nan
        fixed = MAX_WEIGHT if math.isfinite(value) and value > MAX_WEIGHT else 1.0
        if warned is None or (member, repr(raw)) not in warned:
            if warned is not None:
                warned.add((member, repr(raw)))
            LOG.warning("group %s: %s; using weight %g", group, exc, fixed)
        return fixed


class HashRing:
    """An immutable consistent-hash ring over weighted members.

    ``HashRing({"a": 1, "b": 2})`` or ``HashRing(["a", "b"])`` (weight 1).
    A member of weight 0 is listed in :attr:`members` but owns no key (a
    draining member). Lookups are lock-free: nothing changes after
    ``__init__``, so a new ring is swapped in rather than mutated.
    """

    __slots__ = ("_members", "_weights", "_points", "_lo", "_hi", "_probes", "_ppm", "_with_points")

    def __init__(
        self,
        members: Mapping[str, float] | Iterable[str],
        points_per_member: int = DEFAULT_POINTS,
        probes: int = DEFAULT_PROBES,
    ) -> None:
        if isinstance(members, Mapping):
            weights = {m: _check_weight(m, w) for m, w in members.items()}
        else:
            weights = dict.fromkeys(members, 1.0)
        for m in weights:
            if not isinstance(m, str):
                raise TypeError(f"ring members are str, not {type(m).__name__}")
        if len(weights) > MAX_MEMBERS:
            raise ValueError(f"a ring holds at most {MAX_MEMBERS} members, not {len(weights)}")
        if not isinstance(points_per_member, int) or points_per_member < 1:
            raise ValueError(f"points_per_member must be a positive int, not {points_per_member!r}")
        if not isinstance(probes, int) or not 1 <= probes <= MAX_PROBES:
            raise ValueError(f"probes must be within 1..{MAX_PROBES}, not {probes!r}")
        self._ppm = points_per_member
        self._probes = probes
        # Sorted names give every process the same member indexes, and the
        # index order breaks (astronomically rare) point ties the same way.
        self._members: tuple[str, ...] = tuple(sorted(weights))
        self._weights = MappingProxyType({m: weights[m] for m in self._members})
        runs: list[bytes] = []
        lo: list[bytes] = []
        hi: list[bytes] = []
        with_points = 0
        for idx, m in enumerate(self._members):
            w = weights[m]
            count = max(1, round(points_per_member * w)) if w > 0 else 0
            if not count:
                continue
            with_points += 1
            runs.append(_member_run(m, count))
            lo.append(bytes((idx & 0xFF,)) * count)
            hi.append(bytes((idx >> 8,)) * count)
        self._with_points = with_points
        buf = bytearray(b"".join(runs))
        buf[0::8] = b"".join(lo)
        buf[1::8] = b"".join(hi)
        packed = array("d")
        packed.frombytes(bytes(buf))
        if _BIG_ENDIAN:
            packed.byteswap()
        points = packed.tolist()
        points.sort()  # a merge of pre-sorted runs
        self._points: list[float] = points
        raw = array("d", points)
        if _BIG_ENDIAN:
            raw.byteswap()
        data = raw.tobytes()
        self._lo: bytes = data[0::8]
        self._hi: bytes = data[1::8]

    # -- introspection ----------------------------------------------------
    @property
    def members(self) -> tuple[str, ...]:
        """Every member, sorted (weight-0 members included)."""
        return self._members

    @property
    def weights(self) -> Mapping[str, float]:
        """Read-only ``{member: weight}`` the ring was built from."""
        return self._weights

    @property
    def points_per_member(self) -> int:
        return self._ppm

    @property
    def probes(self) -> int:
        return self._probes

    def __len__(self) -> int:
        """Number of points on the ring."""
        return len(self._points)

    def __contains__(self, member: object) -> bool:
        return member in self._weights

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HashRing):
            return NotImplemented
        return (self._weights, self._ppm, self._probes) == (other._weights, other._ppm, other._probes)

    def __hash__(self) -> int:
        return hash((tuple(self._weights.items()), self._ppm, self._probes))

    def __repr__(self) -> str:
        return f"<HashRing members={len(self._members)} points={len(self._points)} probes={self._probes}>"

    def fingerprint(self) -> str:
        """A digest of the ring's points and owners: equal on every process
        that built the same ring (a cheap check that a fleet agrees)."""
        raw = array("d", self._points)
        if _BIG_ENDIAN:
            raw.byteswap()
        h = hashlib.blake2b(raw.tobytes(), digest_size=16)
        h.update("\0".join(self._members).encode("utf-8", "surrogatepass"))
        return h.hexdigest()

    # -- lookups ----------------------------------------------------------
    def _probe_hits(self, key: Key) -> list[tuple[int, int, float]]:
        """For each probe: (index of the first point at or after it, wraps, position)."""
        points = self._points
        n = len(points)
        digest = hashlib.shake_128(key_bytes(key)).digest(_PROBE_BYTES * self._probes)
        hits = []
        for off in range(0, len(digest), _PROBE_BYTES):
            v = 1.0 + (int.from_bytes(digest[off : off + _PROBE_BYTES], "big") >> 4) * _SCALE
            i = bisect.bisect_left(points, v)
            hits.append((0, 1, v) if i == n else (i, 0, v))
        return hits

    def _distance(self, j: int, wraps: int, v: float) -> float:
        """Distance from probe position *v* to point *j*, *wraps* turns later.

        One formula for :meth:`owner` and :meth:`owners`, so both rank
        near-ties identically (the subtractions of values in [1, 2) are exact).
        """
        if not wraps:
            return self._points[j] - v
        return (self._points[j] - 1.0) + (2.0 - v) + (wraps - 1)

    def _index(self, i: int) -> int:
        return self._lo[i] | (self._hi[i] << 8)

    def owner(self, key: Key) -> str:
        """The member that owns *key*. Raises :class:`EmptyRing`."""
        if not self._points:
            raise EmptyRing("the hash ring has no member with a positive weight")
        best = min((self._distance(i, wraps, v), self._index(i)) for i, wraps, v in self._probe_hits(key))
        return self._members[best[1]]

    def owners(self, key: Key, replicas: int = 1) -> list[str]:
        """Up to *replicas* distinct members for *key*, the owner first.

        Members are ranked by their nearest point after any probe. That rank
        depends only on each member's own points, so a member leaving or
        joining never reorders the others (replica sets stay stable).
        """
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, not {replicas}")
        if not self._points:
            raise EmptyRing("the hash ring has no member with a positive weight")
        want = min(replicas, self._with_points)
        if want == 1:
            return [self.owner(key)]
        n = len(self._points)
        best: dict[int, float] = {}
        for j, wraps, v in self._probe_hits(key):
            # Only the first `want` distinct members after a probe can have
            # their best distance here: anyone behind them is outranked.
            seen: set[int] = set()
            while len(seen) < want:
                idx = self._index(j)
                if idx not in seen:
                    seen.add(idx)
                    d = self._distance(j, wraps, v)
                    if d < best.get(idx, math.inf):
                        best[idx] = d
                j += 1
                if j == n:
                    j, wraps = 0, wraps + 1
        ranked = sorted(best.items(), key=lambda item: (item[1], item[0]))
        return [self._members[idx] for idx, _ in ranked[:want]]
