"""Fast, deterministic generator of mysqldump-like SQL files for benchmarks.

The file looks like ``mysqldump --extended-insert`` output: a header, then per
table a ``CREATE TABLE`` block and ``INSERT INTO `t` VALUES (...),(...);`` lines
of about 1 MiB each, then a footer with the dump date.

Speed comes from never formatting fields one by one in Python.  Each table has
pools of 32768 precomputed row fragments (",'Name','Last','email',...,'") built
once from a vocabulary; a row is a handful of such pieces picked independently
with numpy, plus its id and a timestamp that grows with the id (both formatted
per distinct value, then indexed).  A whole ~1 MiB INSERT line is one object
array of pieces and one ``str.join``; lines are built ahead in worker processes.
Every row carries a unique id and timestamp, so no run longer than one row
(< 1 KiB) repeats inside a file: a content-defined chunker cannot find fake
duplicates within one version, while zstd -3 compresses it about 3.5-4x.

The pools come from a fixed vocabulary seed, so all dumps share one
"database vocabulary"; ``seed`` decides which rows are written.

``write_edited`` produces the "next night" dump: a copy of a dump with ~20
clusters of consecutive rows rewritten (same ids, new values), new rows
appended at the end of every growing table (the last table ends the file), and
a new "Dump completed on" date.  Rows per INSERT line are fixed per table (not
chosen by byte budget as mysqldump does), so an edited row never shifts the
line breaks of the rest of the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import multiprocessing as mp
import os
import re
import sys
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

GEN_VERSION = 1
VOCAB_SEED = 0x5EED_D0C5
LINE_TARGET = 1 << 20  # mysqldump's default --net-buffer-length is ~1 MiB
BASE_TS = 1546300800  # 2019-01-01 00:00:00 UTC
DUMP_DATE = dt.datetime(2024, 3, 1, 2, 0, 3)
N_CLUSTERS = 20
LOOKAHEAD = 6  # lines generated ahead by worker processes
FRAG_POOL = 1 << 15  # distinct fragments per fragment pool
SAMPLE_BYTES = 64 << 20
PIECE_BYTES = 1 << 20

Rng = np.random.Generator
ObjArray = np.ndarray[Any, np.dtype[np.object_]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Parse '1G', '64M', '500K', '123' (binary units) into bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not m:
        raise ValueError(f"bad size: {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def format_size(n: int) -> str:
    """Inverse of parse_size for exact multiples (used in cache file names)."""
    for unit in ("T", "G", "M", "K"):
        if n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


# --------------------------------------------------------------------------- pools

_ONSETS = [*"bcdfghjklmnprstvwz", "ch", "sh", "th", "st", "tr", "br", "gr", "pl", "kr"]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ea", "ou", "ie"]
_CODAS = ["", "", "", "n", "r", "s", "l", "t", "m", "nd", "rk"]
_ACCENTS = str.maketrans("aeiou", "áéíöü")


@dataclass(frozen=True)
class Pools:
    """Precomputed value pools; object arrays so fancy indexing stays in C."""

    words: list[str]
    word_p: np.ndarray[Any, np.dtype[np.float64]]
    sentences: ObjArray
    messages: ObjArray  # short, templated log messages
    first: ObjArray
    last: ObjArray
    first_ascii: ObjArray
    last_ascii: ObjArray
    cities: ObjArray
    streets: ObjArray
    countries: ObjArray
    domains: ObjArray
    event_types: ObjArray
    paths: ObjArray
    agents: ObjArray
    products: ObjArray
    notes: ObjArray = field(repr=False)


def _pseudo_words(rng: Rng, count: int, min_syl: int, max_syl: int) -> list[str]:
    out: dict[str, None] = {}
    while len(out) < count:
        k = 2 * count
        nsyl = rng.integers(min_syl, max_syl + 1, k).tolist()
        ons = rng.integers(0, len(_ONSETS), (k, max_syl)).tolist()
        vow = rng.integers(0, len(_VOWELS), (k, max_syl)).tolist()
        cod = rng.integers(0, len(_CODAS), k).tolist()
        for n, o, v, c in zip(nsyl, ons, vow, cod, strict=True):
            out.setdefault("".join(_ONSETS[o[i]] + _VOWELS[v[i]] for i in range(n)) + _CODAS[c], None)
            if len(out) == count:
                break
    return list(out)


def _zipf_p(n: int, s: float = 1.05, q: float = 2.7) -> np.ndarray[Any, np.dtype[np.float64]]:
    w = 1.0 / (np.arange(n) + q) ** s
    return np.asarray(w / w.sum(), dtype=np.float64)


def _sentences(
    rng: Rng, words: list[str], p: np.ndarray[Any, np.dtype[np.float64]], n: int, max_words: int = 28
) -> ObjArray:
    lengths = rng.integers(4, max_words + 1, n)
    idx = rng.choice(len(words), size=int(lengths.sum()), p=p).tolist()
    commas = (rng.random(len(idx)) < 0.06).tolist()
    out: list[str] = []
    pos = 0
    for ln in lengths.tolist():
        toks = [words[i] + ("," if c else "") for i, c in zip(idx[pos : pos + ln], commas[pos : pos + ln], strict=True)]
        toks[-1] = toks[-1].rstrip(",")
        pos += ln
        out.append(" ".join(toks).capitalize() + ".")
    return np.array(out, dtype=object)


def _names(rng: Rng, count: int, irish: bool) -> tuple[list[str], list[str]]:
    base = [w.capitalize() for w in _pseudo_words(rng, count, 2, 3)]
    shown: list[str] = []
    for w in base:
        r = rng.random()
        if r < 0.04:
            shown.append(w.translate(_ACCENTS))
        elif irish and r < 0.05:
            shown.append("O\\'" + w)  # mysqldump escapes the quote
        else:
            shown.append(w)
    return shown, [w.lower() for w in base]


def _obj(items: list[str]) -> ObjArray:
    return np.array(items, dtype=object)


@functools.cache
def pools() -> Pools:
    rng = np.random.default_rng(VOCAB_SEED)
    words = sorted(_pseudo_words(rng, 8000, 1, 4), key=len)
    word_p = _zipf_p(len(words))
    first, first_a = _names(rng, 700, irish=False)
    last, last_a = _names(rng, 2500, irish=True)
    kinds = ["Street", "Road", "Avenue", "Lane", "Way", "Platz", "Strasse", "Drive"]
    streets = [f"{w.capitalize()} {kinds[int(rng.integers(len(kinds)))]}" for w in _pseudo_words(rng, 1500, 2, 3)]
    agents = [
        f"Mozilla/5.0 ({os_}) AppleWebKit/537.36 Chrome/{v}.0.{b}.0 Safari/537.36"
        for os_, v, b in zip(
            rng.choice(["X11; Linux x86_64", "Windows NT 10.0; Win64; x64", "Macintosh; Intel Mac OS X 10_15_7"], 60),
            rng.integers(90, 125, 60),
            rng.integers(4000, 6500, 60),
            strict=True,
        )
    ]
    sentences = _sentences(rng, words, word_p, 40_000)
    return Pools(
        words=words,
        word_p=word_p,
        sentences=sentences,
        messages=_sentences(rng, words[:2000], _zipf_p(2000), 3000, max_words=12),
        first=_obj(first),
        last=_obj(last),
        first_ascii=_obj(first_a),
        last_ascii=_obj(last_a),
        cities=_obj([w.capitalize() for w in _pseudo_words(rng, 800, 2, 3)]),
        streets=_obj(streets),
        countries=_obj([a + b for a in "DEFRUSGBITESNLATCHPLSE" for b in "ABEKLRST"][:60]),
        domains=_obj(
            ["gmail.com", "yahoo.com", "outlook.com", "web.de", "gmx.net"]
            + [w + ".com" for w in _pseudo_words(rng, 40, 2, 3)]
        ),
        event_types=_obj(
            [
                f"{a}.{b}"
                for a in ("user", "cart", "order", "page", "api", "auth")
                for b in ("view", "click", "create", "update", "delete", "login", "error")
            ]
        ),
        paths=_obj(_pseudo_words(rng, 300, 1, 3)),
        agents=_obj(agents),
        products=_obj([" ".join(words[i].capitalize() for i in r) for r in rng.integers(0, 3000, (5000, 3)).tolist()]),
        notes=np.array(["'" + s + "'" for s in sentences[:5000]], dtype=object),
    )


# --------------------------------------------------------------------------- columns
#
# A row is a list of string pieces joined without separators.  Per row, only the
# id (and a few id-derived numbers) is formatted; everything else is an index
# into a pool: either a shared vocabulary pool (sentences) or a per-table pool
# of FRAG_POOL precomputed row fragments ("...,'Name','Last','email',...").
# Rows combine 2-5 independently picked pieces plus a unique id and timestamp.


@functools.cache
def _day_str(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


def stamps(ids: IntArray, rng: Rng, step: int) -> IntArray:
    """Timestamps that grow with the id, jittered within one step."""
    return BASE_TS + ids * step + rng.integers(0, step, len(ids))


def pick(rng: Rng, pool: ObjArray, n: int, zipf: bool = False) -> ObjArray:
    if zipf:
        return np.asarray(pool[rng.choice(len(pool), size=n, p=_zipf_p(len(pool)))], dtype=object)
    return np.asarray(pool[rng.integers(0, len(pool), n)], dtype=object)


def nullable(rng: Rng, values: ObjArray, null_rate: float) -> ObjArray:
    return np.asarray(np.where(rng.random(len(values)) < null_rate, "NULL", values), dtype=object)


def cents(rng: Rng, n: int, mean: float, sigma: float = 1.0) -> tuple[list[int], list[int]]:
    c = (rng.lognormal(np.log(mean), sigma, n) * 100).astype(np.int64)
    whole, frac = np.divmod(c, 100)
    return whole.tolist(), frac.tolist()


def ints(rng: Rng, lo: int, hi: int, n: int) -> list[int]:
    return rng.integers(lo, hi, n).tolist()  # type: ignore[no-any-return]


def compose(fmt: str, *cols: Any) -> ObjArray:
    """Slow path (pool building only): one `fmt % row` per row."""
    return np.array([fmt % t for t in zip(*cols, strict=True)], dtype=object)


SEP = "),("  # between rows; every layout's last piece ends with it


@functools.cache
def _low_digits(suffix: str) -> tuple[ObjArray, ObjArray]:
    return (
        np.array([f"{i}{suffix}" for i in range(1000)], dtype=object),
        np.array([f"{i:03d}{suffix}" for i in range(1000)], dtype=object),
    )


@functools.cache
def _times_of_day(suffix: str) -> ObjArray:
    return np.array([f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}{suffix}" for s in range(86400)], dtype=object)


def _range_strings(values: IntArray, fmt: Callable[[int], str]) -> ObjArray:
    """fmt(v) for each v, formatting each distinct value once (values span a small range)."""
    lo = int(values.min())
    table = np.array([fmt(v) for v in range(lo, int(values.max()) + 1)], dtype=object)
    return np.asarray(table[values - lo], dtype=object)


def id_pieces(ids: IntArray, suffix: str = "") -> tuple[ObjArray, ObjArray]:
    """Decimal strings of near-consecutive ids as two pieces: ids // 1000 and the last three digits."""
    high, low = np.divmod(ids, 1000)
    short, padded = _low_digits(suffix)
    return (
        _range_strings(high, lambda h: str(h) if h else ""),
        np.asarray(np.where(high > 0, padded[low], short[low]), dtype=object),
    )


def datetime_pieces(ts: IntArray, suffix: str = "", prefix: str = "") -> tuple[ObjArray, ObjArray]:
    """(prefix + 'YYYY-MM-DD ', 'HH:MM:SS' + suffix) object arrays for unix timestamps."""
    days, secs = np.divmod(ts, 86400)
    return (
        _range_strings(days, lambda d: prefix + _day_str(d) + " "),
        np.asarray(_times_of_day(suffix)[secs], dtype=object),
    )


Piece = ObjArray | str
Frags = tuple[ObjArray, ...]


# --------------------------------------------------------------------------- tables


def frags_customers(rng: Rng, p: Pools, n: int) -> Frags:
    fi, la = rng.integers(0, len(p.first), n), rng.integers(0, len(p.last), n)
    who = compose(
        ",'%s','%s','%s.%s%d@%s','+%d %03d %07d','%s','%s','",
        p.first[fi],
        p.last[la],
        p.first_ascii[fi],
        p.last_ascii[la],
        ints(rng, 1, 999, n),
        pick(rng, p.domains, n, zipf=True),
        ints(rng, 1, 99, n),
        ints(rng, 100, 999, n),
        ints(rng, 0, 9_999_999, n),
        pick(rng, p.countries, n, zipf=True),
        pick(rng, p.cities, n, zipf=True),
    )
    status = np.array(["active", "inactive", "blocked", "pending"], dtype=object)
    acct = compose(
        "',%d.%02d,'%s',%s" + SEP,
        *cents(rng, n, 80.0, 1.5),
        pick(rng, status, n, zipf=True),
        nullable(rng, pick(rng, p.notes, n), 0.85),
    )
    return who, acct


def pieces_customers(ids: IntArray, rng: Rng, f: Frags, p: Pools) -> list[Piece]:
    n = len(ids)
    return [*id_pieces(ids), pick(rng, f[0], n), *datetime_pieces(stamps(ids, rng, 30)), pick(rng, f[1], n)]


def frags_events(rng: Rng, p: Pools, n: int) -> Frags:
    ip = rng.integers(1, 255, (4, n)).tolist()
    who = compose(",%d,'%s','%d.%d.%d.%d','", ints(rng, 1, 2_000_000, n), pick(rng, p.event_types, n, zipf=True), *ip)
    req = compose(
        r"','{\"path\":\"/%s/%s\",\"ua\":\"%s\",\"ms\":%d,\"sid\":\"%08x\",\"msg\":\"",
        pick(rng, p.paths, n, zipf=True),
        pick(rng, p.paths, n),
        pick(rng, p.agents, n, zipf=True),
        ints(rng, 1, 3000, n),
        ints(rng, 0, 1 << 32, n),
    )
    return who, req


def pieces_events(ids: IntArray, rng: Rng, f: Frags, p: Pools) -> list[Piece]:
    n = len(ids)
    return [
        *id_pieces(ids),
        pick(rng, f[0], n),
        *datetime_pieces(stamps(ids, rng, 2)),
        pick(rng, f[1], n),
        pick(rng, p.messages, n, zipf=True),
        r"\"}'" + SEP,
    ]


def frags_order_items(rng: Rng, p: Pools, n: int) -> Frags:
    disc = np.array(["NULL"] * 6 + ["0.05", "0.10", "0.15", "0.20", "0.25", "0.50"], dtype=object)
    return (
        compose(
            ",%d,%d,%d.%02d,%s" + SEP,
            ints(rng, 1, 60_000, n),
            ints(rng, 1, 12, n),
            *cents(rng, n, 25.0, 1.0),
            pick(rng, disc, n, zipf=True),
        ),
    )


def pieces_order_items(ids: IntArray, rng: Rng, f: Frags, p: Pools) -> list[Piece]:
    order = id_pieces(ids // 3 + 1 + rng.integers(0, 2, len(ids)))
    return [*id_pieces(ids, ","), *order, pick(rng, f[0], len(ids))]


def frags_orders(rng: Rng, p: Pools, n: int) -> Frags:
    status = np.array(["delivered", "shipped", "paid", "new", "cancelled", "refunded"], dtype=object)
    cur = np.array(["EUR", "USD", "GBP", "CHF"], dtype=object)
    head = compose(
        ",%d,'%s',%d.%02d,'%s','",
        ints(rng, 1, 300_000, n),
        pick(rng, status, n, zipf=True),
        *cents(rng, n, 60.0, 1.2),
        pick(rng, cur, n, zipf=True),
    )
    ship = compose(
        ",'%d %s, %s %05d',%s" + SEP,
        ints(rng, 1, 400, n),
        pick(rng, p.streets, n),
        pick(rng, p.cities, n, zipf=True),
        ints(rng, 1000, 99999, n),
        nullable(rng, pick(rng, p.notes, n), 0.9),
    )
    return head, ship


def pieces_orders(ids: IntArray, rng: Rng, f: Frags, p: Pools) -> list[Piece]:
    n = len(ids)
    ts = stamps(ids, rng, 21)
    day, tod = datetime_pieces(ts + rng.integers(60, 30 * 86400, n), "'", "'")
    null = rng.random(n) < 0.4
    upd = [np.where(null, "NULL", day), np.where(null, "", tod)]
    return [*id_pieces(ids), pick(rng, f[0], n), *datetime_pieces(ts, "',"), *upd, pick(rng, f[1], n)]


def frags_products(rng: Rng, p: Pools, n: int) -> Frags:
    name = compose("-%05d','%s','", ints(rng, 0, 26**3, n), pick(rng, p.products, n))
    stock = compose("',%d.%02d,%d,'", *cents(rng, n, 30.0, 1.0), ints(rng, 0, 5000, n))
    return name, stock


def pieces_products(ids: IntArray, rng: Rng, f: Frags, p: Pools) -> list[Piece]:
    n = len(ids)
    s = [pick(rng, p.sentences, n) for _ in range(3)]
    return [
        *id_pieces(ids, ",'SKU-"),
        *id_pieces(ids),
        pick(rng, f[0], n),
        s[0],
        " ",
        s[1],
        " ",
        s[2],
        pick(rng, f[1], n),
        *datetime_pieces(stamps(ids, rng, 600), "'" + SEP),
    ]


def frags_stock_movements(rng: Rng, p: Pools, n: int) -> Frags:
    reasons = np.array(["sale", "restock", "return", "inventory", "damage", "transfer"], dtype=object)
    what = compose(
        ",%d,%d,%d,'%s','",
        ints(rng, 1, 60_000, n),
        ints(rng, 1, 12, n),
        ints(rng, -20, 40, n),
        pick(rng, reasons, n, zipf=True),
    )
    ref = compose("','REF-%08d'" + SEP, ints(rng, 0, 10**8, n))
    return what, ref


def pieces_stock_movements(ids: IntArray, rng: Rng, f: Frags, p: Pools) -> list[Piece]:
    n = len(ids)
    return [*id_pieces(ids), pick(rng, f[0], n), *datetime_pieces(stamps(ids, rng, 9)), pick(rng, f[1], n)]


@dataclass(frozen=True)
class Table:
    name: str
    weight: float  # share of the file's bytes
    grows: bool  # gets appended rows in the next version
    build: Callable[[Rng, Pools, int], Frags]
    layout: Callable[[IntArray, Rng, Frags, Pools], list[Piece]]
    columns: str

    @functools.cached_property
    def frags(self) -> Frags:
        return self.build(np.random.default_rng([VOCAB_SEED, zlib.crc32(self.name.encode())]), pools(), FRAG_POOL)

    def matrix(self, ids: IntArray, rng: Rng) -> ObjArray:
        """(rows, pieces) object array; joined, it is the rows with a separator after each."""
        cols = self.layout(ids, rng, self.frags, pools())
        m = np.empty((len(ids), len(cols)), dtype=object)
        for j, c in enumerate(cols):
            m[:, j] = c
        return m

    def rows(self, ids: IntArray, rng: Rng) -> list[str]:
        return ["".join(r)[: -len(SEP)] for r in self.matrix(ids, rng).tolist()]

    @functools.cached_property
    def rows_per_line(self) -> int:
        sample = self.rows(np.arange(1_000_000, 1_000_512, dtype=np.int64), np.random.default_rng(1))
        avg = sum(map(len, sample)) / len(sample) + 3
        return max(1, int(LINE_TARGET / avg))


_ID = "  `id` bigint unsigned NOT NULL AUTO_INCREMENT,\n"
_PK = "  PRIMARY KEY (`id`)"
TABLES: tuple[Table, ...] = (
    Table(
        name="customers",
        weight=0.12,
        grows=True,
        build=frags_customers,
        layout=pieces_customers,
        columns=_ID + "  `first_name` varchar(64) NOT NULL,\n  `last_name` varchar(64) NOT NULL,\n"
        "  `email` varchar(255) NOT NULL,\n  `phone` varchar(32) DEFAULT NULL,\n  `country` char(2) NOT NULL,\n"
        "  `city` varchar(128) NOT NULL,\n  `created_at` datetime NOT NULL,\n"
        "  `balance` decimal(12,2) NOT NULL DEFAULT '0.00',\n"
        "  `status` enum('active','inactive','blocked','pending') NOT NULL,\n  `notes` text,\n"
        + _PK
        + ",\n  KEY `idx_email` (`email`)",
    ),
    Table(
        name="events",
        weight=0.35,
        grows=True,
        build=frags_events,
        layout=pieces_events,
        columns=_ID + "  `user_id` bigint unsigned NOT NULL,\n  `event_type` varchar(32) NOT NULL,\n"
        "  `ip` varchar(45) NOT NULL,\n  `created_at` datetime NOT NULL,\n  `payload` json NOT NULL,\n"
        + _PK
        + ",\n  KEY `idx_user` (`user_id`),\n  KEY `idx_created` (`created_at`)",
    ),
    Table(
        name="order_items",
        weight=0.18,
        grows=True,
        build=frags_order_items,
        layout=pieces_order_items,
        columns=_ID + "  `order_id` bigint unsigned NOT NULL,\n  `product_id` bigint unsigned NOT NULL,\n"
        "  `quantity` int NOT NULL,\n  `unit_price` decimal(10,2) NOT NULL,\n  `discount` decimal(4,2) DEFAULT NULL,\n"
        + _PK
        + ",\n  KEY `idx_order` (`order_id`)",
    ),
    Table(
        name="orders",
        weight=0.22,
        grows=True,
        build=frags_orders,
        layout=pieces_orders,
        columns=_ID + "  `customer_id` bigint unsigned NOT NULL,\n  `status` varchar(16) NOT NULL,\n"
        "  `total` decimal(12,2) NOT NULL,\n  `currency` char(3) NOT NULL,\n  `created_at` datetime NOT NULL,\n"
        "  `updated_at` datetime DEFAULT NULL,\n  `shipping_address` varchar(255) NOT NULL,\n  `note` text,\n"
        + _PK
        + ",\n  KEY `idx_customer` (`customer_id`)",
    ),
    Table(
        name="products",
        weight=0.03,
        grows=False,
        build=frags_products,
        layout=pieces_products,
        columns=_ID + "  `sku` varchar(32) NOT NULL,\n  `name` varchar(255) NOT NULL,\n  `description` text NOT NULL,\n"
        "  `price` decimal(10,2) NOT NULL,\n  `stock` int NOT NULL,\n  `created_at` datetime NOT NULL,\n"
        + _PK
        + ",\n  UNIQUE KEY `uq_sku` (`sku`)",
    ),
    Table(
        name="stock_movements",
        weight=0.10,
        grows=True,
        build=frags_stock_movements,
        layout=pieces_stock_movements,
        columns=_ID
        + "  `product_id` bigint unsigned NOT NULL,\n  `warehouse_id` int NOT NULL,\n  `delta` int NOT NULL,\n"
        "  `reason` varchar(16) NOT NULL,\n  `created_at` datetime NOT NULL,\n  `ref` varchar(32) NOT NULL,\n" + _PK,
    ),
)
TABLE_BY_NAME = {t.name: t for t in TABLES}


# --------------------------------------------------------------------------- text blocks

_HEADER = """-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)
--
-- Host: localhost    Database: shop
-- ------------------------------------------------------
-- Server version\t8.0.36

/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET @OLD_CHARACTER_SET_RESULTS=@@CHARACTER_SET_RESULTS */;
/*!40101 SET @OLD_COLLATION_CONNECTION=@@COLLATION_CONNECTION */;
/*!50503 SET NAMES utf8mb4 */;
/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;
/*!40103 SET TIME_ZONE='+00:00' */;
/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;
/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;
/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;
/*!40111 SET @OLD_SQL_NOTES=@@SQL_NOTES, SQL_NOTES=0 */;
"""

_FOOTER = """/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;

/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;
/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;
/*!40014 SET UNIQUE_CHECKS=@OLD_UNIQUE_CHECKS */;
/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;
/*!40101 SET CHARACTER_SET_RESULTS=@OLD_CHARACTER_SET_RESULTS */;
/*!40101 SET COLLATION_CONNECTION=@OLD_COLLATION_CONNECTION */;
/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;

"""
_COMPLETED = "-- Dump completed on "
_COMPLETED_RE = re.compile(rb"^-- Dump completed on (\d{4}-\d\d-\d\d) +(\d+):(\d\d):(\d\d)$")


def table_head(t: Table) -> str:
    return (
        f"\n--\n-- Table structure for table `{t.name}`\n--\n\n"
        f"DROP TABLE IF EXISTS `{t.name}`;\n"
        "/*!40101 SET @saved_cs_client     = @@character_set_client */;\n"
        "/*!50503 SET character_set_client = utf8mb4 */;\n"
        f"CREATE TABLE `{t.name}` (\n{t.columns}\n"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_ai_ci;\n"
        "/*!40101 SET character_set_client = @saved_cs_client */;\n\n"
        f"--\n-- Dumping data for table `{t.name}`\n--\n\n"
        f"LOCK TABLES `{t.name}` WRITE;\n"
        f"/*!40000 ALTER TABLE `{t.name}` DISABLE KEYS */;\n"
    )


def table_tail(t: Table) -> str:
    return f"/*!40000 ALTER TABLE `{t.name}` ENABLE KEYS */;\nUNLOCK TABLES;\n"


def completed_line(when: dt.datetime) -> str:
    # mysqldump prints the hour space-padded: "2024-03-01  2:00:03"
    return f"{_COMPLETED}{when:%Y-%m-%d} {when.hour:2d}:{when:%M:%S}\n"


def insert_prefix(name: str) -> bytes:
    return f"INSERT INTO `{name}` VALUES (".encode()


def insert_line(name: str, rows: list[str]) -> bytes:
    return insert_prefix(name) + "),(".join(rows).encode() + b");\n"


# --------------------------------------------------------------------------- writing


def _line_rng(key: tuple[int, ...]) -> Rng:
    return np.random.default_rng(list(key))


def full_line(table: str, first_id: int, key: tuple[int, ...]) -> bytes:
    """One INSERT line of `rows_per_line` rows; a pure function of its arguments."""
    t = TABLE_BY_NAME[table]
    m = t.matrix(np.arange(first_id, first_id + t.rows_per_line, dtype=np.int64), _line_rng(key))
    m[-1, -1] = m[-1, -1][: -len(SEP)] + ");\n"
    return insert_prefix(table) + "".join(m.ravel().tolist()).encode()


def tail_line(table: str, first_id: int, key: tuple[int, ...], budget: int) -> tuple[bytes, int]:
    """Like full_line, but only as many rows as fit in about `budget` bytes; returns (line, rows)."""
    t = TABLE_BY_NAME[table]
    rows = _trim(t.rows(np.arange(first_id, first_id + t.rows_per_line, dtype=np.int64), _line_rng(key)), budget)
    return insert_line(table, rows), len(rows)


def table_lines(
    t: Table, first_id: int, budget: int, key: tuple[int, ...], ex: Executor | None = None
) -> Iterator[bytes]:
    """INSERT lines of about `budget` bytes in total, ids from `first_id` on.

    Line k uses the random stream key + (k,), so the output is the same with or
    without an executor; full lines are generated ahead in its worker processes.
    """
    n, k = t.rows_per_line, 0
    ahead: deque[Future[bytes]] = deque()
    while budget >= 2 * LINE_TARGET:
        if ex is None:
            line = full_line(t.name, first_id + k * n, (*key, k))
        else:
            while len(ahead) < LOOKAHEAD:
                j = k + len(ahead)
                ahead.append(ex.submit(full_line, t.name, first_id + j * n, (*key, j)))
            line = ahead.popleft().result()
        budget -= len(line)
        k += 1
        yield line
    for fut in ahead:
        fut.cancel()
    next_id = first_id + k * n
    while budget > 0:  # the last line or two, trimmed to the budget
        line, nrows = tail_line(t.name, next_id, (*key, k), budget)
        budget -= len(line)
        next_id += nrows
        k += 1
        yield line


def _warm() -> None:
    """Build every cache a worker needs, before forking."""
    for t in TABLES:
        _ = t.frags, t.rows_per_line


def _executor(workers: int) -> AbstractContextManager[Executor | None]:
    if workers <= 0:
        return nullcontext(None)
    _warm()
    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork"))


def _trim(rows: list[str], budget: int) -> list[str]:
    total, keep = 40, 0
    for keep, r in enumerate(rows, 1):  # noqa: B007 - keep is used after the loop
        total += len(r) + 3
        if total >= budget:
            break
    return rows[:keep]


def write_dump(path: str | os.PathLike[str], size_bytes: int, seed: int, workers: int | None = None) -> dict[str, Any]:
    """Write a dump of about `size_bytes` bytes; return a few statistics.

    `workers` generator processes (default: one per CPU; 0 = in this process)."""
    t0 = time.perf_counter()
    tmp = Path(f"{os.fspath(path)}.tmp")
    rows = 0
    nworkers = (os.cpu_count() or 1) if workers is None else workers
    with _executor(nworkers) as ex, open(tmp, "wb", buffering=8 << 20) as f:
        f.write(_HEADER.encode())
        written = len(_HEADER)
        tail = len(_FOOTER) + 48
        for i, t in enumerate(TABLES):
            f.write(table_head(t).encode())
            written += len(table_head(t)) + len(table_tail(t))
            share = size_bytes - tail - written if i == len(TABLES) - 1 else int(size_bytes * t.weight)
            for line in table_lines(t, 1, share, (seed, i), ex):
                f.write(line)
                written += len(line)
                rows += line.count(b"),(") + 1
            f.write(table_tail(t).encode())
        f.write((_FOOTER + completed_line(DUMP_DATE + dt.timedelta(seconds=seed % 3600))).encode())
    os.replace(tmp, path)
    secs = time.perf_counter() - t0
    size = os.path.getsize(path)
    return {"path": os.fspath(path), "bytes": size, "rows": rows, "seconds": secs, "mb_per_s": size / secs / 1e6}


@dataclass
class _EditState:
    """Streaming state of write_edited."""

    clusters: list[tuple[int, int]]  # (start offset, bytes to rewrite), sorted
    seed: int
    append_fraction: float
    next_cluster: int = 0
    remaining: int = 0
    rows_edited: int = 0
    rows_appended: int = 0
    table: str = ""
    table_bytes: int = 0
    last_id: int = 0
    stats: dict[str, int] = field(default_factory=dict)


def plan_clusters(size: int, seed: int, edit_fraction: float, n: int = N_CLUSTERS) -> list[tuple[int, int]]:
    rng = np.random.default_rng([seed, 0xED17])
    starts = np.sort(rng.integers(0, size, n))
    sizes = (edit_fraction * size / n * rng.uniform(0.5, 1.5, n)).astype(np.int64)
    return list(zip(starts.tolist(), sizes.tolist(), strict=True))


def _row_id(row: bytes) -> int:
    return int(row[: row.index(b",")])


def _last_id(line: bytes, prefix_len: int) -> int:
    cut = line.rfind(b"),(")
    return _row_id(line[prefix_len:] if cut < 0 else line[cut + 3 :])


def _edit_line(line: bytes, offset: int, st: _EditState) -> bytes:
    """Rewrite the rows of one INSERT line that fall inside edit clusters."""
    prefix_len = len(insert_prefix(st.table))
    last_needed = st.clusters[st.next_cluster][0] if st.next_cluster < len(st.clusters) else None
    if st.remaining <= 0 and (last_needed is None or last_needed >= offset + len(line)):
        return line
    rows = line[prefix_len:-3].split(b"),(")
    pos = offset + prefix_len
    touched: list[int] = []
    for j, row in enumerate(rows):
        while st.next_cluster < len(st.clusters) and st.clusters[st.next_cluster][0] <= pos:
            st.remaining += st.clusters[st.next_cluster][1]
            st.next_cluster += 1
        if st.remaining > 0:
            touched.append(j)
            st.remaining -= len(row) + 3
        pos += len(row) + 3
    if not touched:
        return line
    ids = np.array([_row_id(rows[j]) for j in touched], dtype=np.int64)
    rng = np.random.default_rng([st.seed, 0xED, int(ids[0])])
    new = TABLE_BY_NAME[st.table].rows(ids, rng)
    for j, r in zip(touched, new, strict=True):
        rows[j] = r.encode()
    st.rows_edited += len(touched)
    return line[:prefix_len] + b"),(".join(rows) + b");\n"


def _append_lines(st: _EditState) -> Iterator[bytes]:
    t = TABLE_BY_NAME[st.table]
    if not t.grows or st.append_fraction <= 0:
        return
    key = (st.seed, 0xA99, TABLES.index(t))
    for line in table_lines(t, st.last_id + 1, int(st.table_bytes * st.append_fraction), key):
        st.rows_appended += line.count(b"),(") + 1
        yield line


def _next_completed(line: bytes) -> bytes:
    m = _COMPLETED_RE.match(line.rstrip(b"\n"))
    if not m:
        return line
    when = dt.datetime.fromisoformat(m.group(1).decode()).replace(
        hour=int(m.group(2)), minute=int(m.group(3)), second=int(m.group(4))
    )
    return completed_line(when + dt.timedelta(days=1, seconds=7)).encode()


def _edit_stream(src: BinaryIO, dst: BinaryIO, st: _EditState) -> None:
    offset = 0
    for line in src:
        if line.startswith(b"INSERT INTO `"):
            if not st.table:
                st.table = line[13 : line.index(b"`", 13)].decode()
            out = _edit_line(line, offset, st)
            st.table_bytes += len(line)
            st.last_id = _last_id(line, len(insert_prefix(st.table)))
        elif line.startswith(b"/*!40000 ALTER TABLE `") and line.endswith(b" ENABLE KEYS */;\n"):
            for extra in _append_lines(st):
                dst.write(extra)
            st.table, st.table_bytes, st.last_id = "", 0, 0
            out = line
        else:
            out = _next_completed(line) if line.startswith(_COMPLETED.encode()) else line
        dst.write(out)
        offset += len(line)


def write_edited(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    seed: int,
    edit_fraction: float = 0.01,
    append_fraction: float = 0.02,
) -> dict[str, Any]:
    """Write the next-night version of dump `src` to `dst`; return statistics."""
    t0 = time.perf_counter()
    size = os.path.getsize(src)
    st = _EditState(plan_clusters(size, seed, edit_fraction), seed, append_fraction)
    tmp = Path(f"{os.fspath(dst)}.tmp")
    with open(src, "rb", buffering=8 << 20) as fi, open(tmp, "wb", buffering=8 << 20) as fo:
        _edit_stream(fi, fo, st)
    os.replace(tmp, dst)
    secs = time.perf_counter() - t0
    out_size = os.path.getsize(dst)
    return {
        "path": os.fspath(dst),
        "bytes": out_size,
        "src_bytes": size,
        "seconds": secs,
        "clusters": len(st.clusters),
        "rows_edited": st.rows_edited,
        "rows_appended": st.rows_appended,
        "mb_per_s": out_size / secs / 1e6,
    }


# --------------------------------------------------------------------------- compression facts


def sample_pieces(path: str | os.PathLike[str], total: int = SAMPLE_BYTES, piece: int = PIECE_BYTES) -> list[bytes]:
    """`total` bytes as `piece`-sized reads spread evenly over the file."""
    size = os.path.getsize(path)
    n = max(1, min(total // piece, size // piece))
    step = max(piece, (size - piece) // max(1, n - 1)) if n > 1 else piece
    with open(path, "rb") as f:
        out = []
        for i in range(n):
            f.seek(min(i * step, max(0, size - piece)))
            out.append(f.read(piece))
    return out


def zstd_stats(path: str | os.PathLike[str], levels: tuple[int, ...] = (1, 3)) -> dict[str, Any]:
    """Ratio and single-thread MB/s of zstd on 1 MiB pieces of a 64 MiB sample."""
    import zstandard

    pieces = sample_pieces(path)
    raw = sum(map(len, pieces))
    out: dict[str, Any] = {"sample_bytes": raw, "piece_bytes": PIECE_BYTES}
    for level in levels:
        cctx = zstandard.ZstdCompressor(level=level)
        t0 = time.process_time()
        comp = sum(len(cctx.compress(p)) for p in pieces)
        cpu = time.process_time() - t0
        out[f"level{level}"] = {"ratio": raw / comp, "mb_per_s_per_core": raw / cpu / 1e6}
    return out


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gen_dump", description=__doc__.splitlines()[0])
    ap.add_argument("out", help="file to write")
    ap.add_argument("--size", default="1G", help="target size, binary units (default 1G)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--edit-from", metavar="SRC", help="write the next-night version of SRC instead")
    ap.add_argument("--edit-fraction", type=float, default=0.01)
    ap.add_argument("--append-fraction", type=float, default=0.02)
    ap.add_argument("--workers", type=int, default=None, help="generator processes (default: CPUs)")
    ap.add_argument("--stats", action="store_true", help="also print zstd ratio/speed on a 64 MiB sample")
    args = ap.parse_args(argv)
    if args.edit_from:
        info = write_edited(args.edit_from, args.out, args.seed, args.edit_fraction, args.append_fraction)
    else:
        info = write_dump(args.out, parse_size(args.size), args.seed, args.workers)
    if args.stats:
        info["zstd"] = zstd_stats(args.out)
    json.dump(info, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
