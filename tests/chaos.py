"""A chaos soak as Jepsen runs one (issue 23): five daemons on a namespaced LAN
(tests/chaos_lan.py), a random schedule of work and faults drawn from one seed, then the
network healed, every daemon running, and every promise checked.

The seed fixes the schedule (which operation, on whom, with what bytes, after what pause);
what the daemons answer depends on timing, so a replay runs the same schedule, not the
same history. Every operation and its answer is written to schedule.jsonl.

The oracle. Only the owner changes a circle, and this harness is the only client, so it
knows each epoch's members. A moment was sealed at an epoch between `lo` (the epoch its
author's daemon showed just before) and `hi` (the owner's at the answer); spec/moments.md
section 7: readable by that epoch's members only, and served only to members of the
latest manifest (spec/sync.md). So, once converged:
- must have it: its author, and when lo == hi and its author is still a member at the
  end, those of that epoch still members at the end;
- may have it: anyone of an epoch in lo..hi (a member removed since kept what she had);
- nobody else, in particular no member removed before lo ("nothing sent after removal").
A comment or reaction shows only under its post: required where both are required.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from tests.chaos_lan import Lan, Node, faketime_unavailable, multipart

EMOJI = ("👍", "🎉", "❤️", "😂", "🔥", "👀")
MAX_DOWN = 2  # daemons down at once, at most
# tbf (rate, bucket, the longest a packet may queue before it is dropped): a slow link.
SLOW_LINKS = (
    ("rate", "2mbit", "burst", "8kb", "latency", "50ms"),
    ("rate", "512kbit", "burst", "4kb", "latency", "400ms"),
    ("rate", "8mbit", "burst", "16kb", "latency", "20ms"),
)
# htb (the rate of three packets in four, the rate of the fourth, each queue's length in
# packets): a reordering link, where there is no netem.
REORDER_LINKS = (("8mbit", "1mbit", 20), ("20mbit", "2mbit", 30), ("4mbit", "512kbit", 10))


@dataclass
class Circle:
    id: str
    owner: int
    name: str
    epochs: dict[int, frozenset[int]]
    epoch: int

    def members(self, lo: int, hi: int) -> list[frozenset[int]]:
        return [self.epochs[e] for e in range(lo, hi + 1) if e in self.epochs]


@dataclass
class Sent:
    """An acknowledged moment."""

    id: str
    kind: str  # post, comment, reaction, retraction
    circle: str
    author: int
    lo: int
    hi: int
    parent: str | None = None
    text: str = ""
    emoji: str = ""
    files: list[str] = field(default_factory=list)  # sha256 of each file, in order
    photos: int = 0
    retracted_by: Sent | None = None


@dataclass
class Figures:
    ops: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    skipped_faults: dict[str, str] = field(default_factory=dict)
    file_bytes: int = 0
    checks: int = 0
    moments: int = 0
    converge_seconds: float = 0.0
    usage_first: dict[int, tuple[int, int]] = field(default_factory=dict)
    usage_last: dict[int, tuple[int, int]] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)


class Soak:
    """The schedule, the model of what should be where, and the final checks."""

    def __init__(self, lan: Lan, nodes: list[Node], *, seed: int, long: bool, log: Path) -> None:
        self.lan, self.nodes, self.long = lan, nodes, long
        self.rng = random.Random(seed)
        self.log = log.open("w")
        self.circles: dict[str, Circle] = {}
        self.sent: dict[str, Sent] = {}
        self.figures = Figures()
        self.step = 0
        self.netem_reason = lan.netem_unavailable()
        # Without netem (this machine's kernel has none), a slow link still makes packets
        # wait and be lost (tbf, a low rate and a short queue), and a reordering link sends
        # one packet in four through a slower class (htb with a u32 filter).
        self.slow_reason = (
            lan.netem_unavailable("tbf", *SLOW_LINKS[0]) if self.netem_reason else "netem is here"
        )
        self.reorder_reason = lan.reorder_unavailable() if self.netem_reason else "netem is here"
        self.faketime_reason = faketime_unavailable()
        if self.netem_reason:
            instead = [
                what
                for what, reason in (
                    ("slow links (tbf): delay and loss", self.slow_reason),
                    ("reordering links (htb, u32)", self.reorder_reason),
                )
                if reason is None
            ]
            self.figures.skipped_faults["netem"] = self.netem_reason + (
                f"; instead: {', '.join(instead)}" if instead else ""
            )
        if self.faketime_reason:
            self.figures.skipped_faults["clock"] = self.faketime_reason
        self.max_file = 50 << 20 if long else 2 << 20
        self.file_budget = 2 << 30 if long else 8 << 20

    # --- setup ---------------------------------------------------------------------------

    def befriend_all(self) -> None:
        for a in self.nodes:
            for b in self.nodes[a.index + 1 :]:
                status, link = a.api("GET", "/pairing/link")
                assert status == 200, link
                status, answer = b.api("POST", "/friends", {"link": link["link"], "wait": 30})
                assert status == 200, answer

    def first_circles(self) -> None:
        for node in self.nodes:
            self.new_circle(node)

    def warm_up(self) -> float:
        """Every daemon posts a file of the largest size once and every member gets it,
        before the clock starts: memory is compared from the first minute after this
        (a daemon's first big transfer sizes its buffers and thread pools once).
        Returns how long it took."""
        start = time.monotonic()
        for circle in list(self.circles.values()):
            self.post_file(self.nodes[circle.owner], circle, self.max_file)
        problems = self.converge(timeout=600)
        assert not problems, "the warm-up did not converge: " + "\n".join(problems[:20])
        return time.monotonic() - start

    # --- the schedule ----------------------------------------------------------------------

    def run(self, seconds: float, on_first_minute: Any = None) -> None:
        start = time.monotonic()
        sampled = False
        for _ in range(10**7):  # bounded by time below
            elapsed = time.monotonic() - start
            if elapsed >= seconds:
                break
            if not sampled and elapsed >= min(60.0, seconds / 2):
                self.figures.usage_first = self.usage()
                sampled = True
            self.one_step()
            # Pacing, not synchronisation: the schedule's own think time.
            time.sleep(self.rng.uniform(0.0, 0.4))
        if not sampled:
            self.figures.usage_first = self.usage()

    def one_step(self) -> None:
        self.step += 1
        up = [n for n in self.nodes if n.up]
        down = [n for n in self.nodes if not n.up]
        choices: dict[str, float] = {
            "post": 20,
            "photo": 5,
            "file": 3 if self.figures.file_bytes < self.file_budget else 0,
            "comment": 14,
            "react": 12,
            "retract": 3,
            "add": 3,
            "remove": 3,
            "circle": 1,
            # Node 0 is never killed nor restarted: its memory and descriptors are
            # compared from the first minute to the end of one process's life.
            "kill": 3 if len(down) < MAX_DOWN else 0,
            "restart": 6 if down else 0,
            "clock": 0 if self.faketime_reason else 1.5,
            "cut": 1.5,
            "mend": 4 if self.lan.cut_hosts else 0,
            "split": 1.5 if not self.lan.split_hosts else 0,
            "heal": 3 if self.lan.split_hosts else 0,
            "netem": 0 if self.netem_reason else 2,
            "slow": 2 if self.slow_reason is None else 0,
            "reorder": 2 if self.reorder_reason is None else 0,
            "calm": 3 if self.lan.netem_hosts else 0,
        }
        kinds = [k for k, w in choices.items() if w > 0]
        kind = self.rng.choices(kinds, [choices[k] for k in kinds])[0]
        getattr(self, f"op_{kind}")(up, down)

    def record(self, kind: str, ok: bool | None, **detail: Any) -> None:
        bucket = self.figures.ops if ok else self.figures.refused
        if ok is not None:
            bucket[kind] = bucket.get(kind, 0) + 1
        self.log.write(json.dumps({"step": self.step, "op": kind, "ok": ok, **detail}) + "\n")
        self.log.flush()

    def fault(self, kind: str, **detail: Any) -> None:
        self.figures.faults[kind] = self.figures.faults.get(kind, 0) + 1
        self.log.write(json.dumps({"step": self.step, "fault": kind, **detail}) + "\n")
        self.log.flush()

    def answered(self, node: Node, what: str, status: int, body: Any) -> bool:
        if status >= 500:
            self.figures.server_errors.append(f"{node.name} {what}: {status} {body}")
        return 200 <= status < 300

    # --- work ------------------------------------------------------------------------------

    def _epoch_seen(self, node: Node, circle: Circle) -> int | None:
        status, body = node.api("GET", f"/circles/{circle.id}")
        if status != 200 or body.get("removed"):
            return None
        return int(body["epoch"])

    def _poster(self, up: list[Node]) -> tuple[Node, Circle] | None:
        """An author who may post somewhere, and the circle (owners post)."""
        mine = [(n, c) for c in self.circles.values() for n in up if n.index == c.owner]
        return self.rng.choice(mine) if mine else None

    def _member_of(self, up: list[Node], circle_id: str) -> Node | None:
        circle = self.circles[circle_id]
        members = [n for n in up if n.index in circle.epochs[circle.epoch]]
        return self.rng.choice(members) if members else None

    def _publish(
        self, kind: str, node: Node, circle: Circle, send: Any, key: Any = None, **sent: Any
    ) -> None:
        """Send it; if acknowledged, remember it under the moment's id (`key(answer)` when
        the answer is the post it comments or reacts on)."""
        lo = self._epoch_seen(node, circle)
        if lo is None:
            self.record(kind, None, node=node.name, why="circle not known here yet")
            return
        status, body = send()
        ok = self.answered(node, kind, status, body)
        if ok:
            moment = Sent(
                id=key(body) if key else body["id"],
                kind=kind,
                circle=circle.id,
                author=node.index,
                lo=lo,
                hi=self.circles[circle.id].epoch,
                **sent,
            )
            self.sent[moment.id] = moment
        self.record(
            kind,
            ok,
            node=node.name,
            circle=circle.name,
            status=status,
            id=moment.id if ok else None,
            epochs=[lo, self.circles[circle.id].epoch],
        )

    def op_post(self, up: list[Node], down: list[Node]) -> None:
        chosen = self._poster(up)
        if chosen is None:
            return
        node, circle = chosen
        text = f"step {self.step} by {node.name}: {self.rng.getrandbits(64):x}"
        self._publish(
            "post",
            node,
            circle,
            lambda: node.api("POST", "/moments", {"circle": circle.id, "text": text}),
            text=text,
        )

    def op_photo(self, up: list[Node], down: list[Node]) -> None:
        chosen = self._poster(up)
        if chosen is None:
            return
        node, circle = chosen
        side = self.rng.randint(16, 160)
        image = Image.frombytes("RGB", (side, side), self.rng.randbytes(side * side * 3))
        png = io.BytesIO()
        image.save(png, format="PNG", compress_level=1)
        text = f"photo at step {self.step}"
        body, ctype = multipart(
            [
                ("circle", None, None, circle.id.encode()),
                ("text", None, None, text.encode()),
                ("photo", "p.png", "image/png", png.getvalue()),
            ]
        )
        self._publish(
            "photo",
            node,
            circle,
            lambda: self._json(node.request("POST", "/moments", body, ctype)),
            text=text,
            photos=1,
        )

    def op_file(self, up: list[Node], down: list[Node]) -> None:
        chosen = self._poster(up)
        if chosen is not None:
            # Log-uniform: mostly small, some big.
            self.post_file(*chosen, int(self.max_file ** self.rng.random()))

    def post_file(self, node: Node, circle: Circle, size: int) -> None:
        data = self.rng.randbytes(size)
        self.figures.file_bytes += size
        text = f"file of {size} bytes at step {self.step}"
        body, ctype = multipart(
            [
                ("circle", None, None, circle.id.encode()),
                ("text", None, None, text.encode()),
                ("file", f"f{self.step}.bin", "application/octet-stream", data),
            ]
        )
        self._publish(
            "file",
            node,
            circle,
            lambda: self._json(node.request("POST", "/moments", body, ctype, timeout=300)),
            text=text,
            files=[hashlib.sha256(data).hexdigest()],
        )

    @staticmethod
    def _json(answer: tuple[int, bytes]) -> tuple[int, Any]:
        return answer[0], json.loads(answer[1]) if answer[1] else None

    def _live_posts(self) -> list[Sent]:
        return [
            s
            for s in self.sent.values()
            if s.kind in ("post", "photo", "file") and s.retracted_by is None
        ]

    def op_comment(self, up: list[Node], down: list[Node]) -> None:
        posts = self._live_posts()
        if not posts:
            return
        post = self.rng.choice(posts)
        node = self._member_of(up, post.circle)
        if node is None:
            return
        text = f"comment at step {self.step} by {node.name}"
        self._publish(
            "comment",
            node,
            self.circles[post.circle],
            lambda: node.api("POST", f"/moments/{post.id}/comments", {"text": text}),
            key=lambda body: next(c["id"] for c in body["comments"] if c["text"] == text),
            parent=post.id,
            text=text,
        )

    def op_react(self, up: list[Node], down: list[Node]) -> None:
        posts = self._live_posts()
        if not posts:
            return
        post = self.rng.choice(posts)
        node = self._member_of(up, post.circle)
        if node is None:
            return
        used = {
            s.emoji for s in self.sent.values() if s.parent == post.id and s.author == node.index
        }
        left = [e for e in EMOJI if e not in used]
        if not left:
            return
        emoji = self.rng.choice(left)
        self._publish(
            "react",
            node,
            self.circles[post.circle],
            lambda: node.api("POST", f"/moments/{post.id}/reactions", {"emoji": emoji}),
            key=lambda body: f"{post.id}/{node.name}/{emoji}",  # the API shows no reaction id
            parent=post.id,
            emoji=emoji,
        )

    def op_retract(self, up: list[Node], down: list[Node]) -> None:
        ups = {n.index for n in up}
        posts = [p for p in self._live_posts() if p.author in ups]
        if not posts:
            return
        post = self.rng.choice(posts)
        node = self.nodes[post.author]
        circle = self.circles[post.circle]
        lo = self._epoch_seen(node, circle)
        if lo is None:
            return
        status, body = node.api("DELETE", f"/moments/{post.id}")
        ok = self.answered(node, "retract", status, body)
        self.record("retract", ok, node=node.name, moment=post.id[:12], status=status)
        if ok:
            post.retracted_by = Sent(
                id="",
                kind="retraction",
                circle=circle.id,
                author=node.index,
                lo=lo,
                hi=circle.epoch,
            )

    # --- circles ---------------------------------------------------------------------------

    def _set_epoch(self, circle: Circle, body: dict[str, Any]) -> None:
        by_identity = {n.identity: n.index for n in self.nodes}
        members = frozenset(by_identity[p["identity"]] for p in body["members"]) | {circle.owner}
        circle.epoch = int(body["epoch"])
        circle.epochs[circle.epoch] = members

    def new_circle(self, node: Node) -> None:
        others = [n for n in self.nodes if n is not node]
        chosen = self.rng.sample(others, self.rng.randint(1, len(others)))
        name = f"c{self.step}-{node.name}"
        status, body = node.api(
            "POST", "/circles", {"name": name, "members": [n.identity for n in chosen]}
        )
        ok = self.answered(node, "circle", status, body)
        self.record("circle", ok, node=node.name, name=name, status=status)
        if ok:
            circle = Circle(id=body["id"], owner=node.index, name=name, epochs={}, epoch=0)
            self._set_epoch(circle, body)
            self.circles[circle.id] = circle

    def op_circle(self, up: list[Node], down: list[Node]) -> None:
        if up:
            self.new_circle(self.rng.choice(up))

    def _change(self, kind: str, up: list[Node]) -> None:
        owned = [c for c in self.circles.values() if self.nodes[c.owner].up]
        if not owned:
            return
        circle = self.rng.choice(owned)
        members = circle.epochs[circle.epoch] - {circle.owner}
        ever = set().union(*circle.epochs.values())
        # Never someone back: a member once removed stays out (the oracle's epochs stay
        # a simple history; re-adding is covered by the replication tests).
        pool = sorted(members if kind == "remove" else set(range(len(self.nodes))) - ever)
        if not pool:
            return
        who = self.nodes[self.rng.choice(pool)]
        owner = self.nodes[circle.owner]
        status, body = owner.api("PATCH", f"/circles/{circle.id}", {kind: [who.identity]})
        ok = self.answered(owner, kind, status, body)
        self.record(kind, ok, node=owner.name, circle=circle.name, who=who.name, status=status)
        if ok:
            self._set_epoch(circle, body)

    def op_add(self, up: list[Node], down: list[Node]) -> None:
        self._change("add", up)

    def op_remove(self, up: list[Node], down: list[Node]) -> None:
        self._change("remove", up)

    # --- faults ----------------------------------------------------------------------------

    def op_kill(self, up: list[Node], down: list[Node]) -> None:
        victims = [n for n in up if n.index != 0]
        if victims:
            victim = self.rng.choice(victims)
            victim.kill(signal.SIGKILL)
            self.fault("sigkill", node=victim.name)

    def op_restart(self, up: list[Node], down: list[Node]) -> None:
        node = self.rng.choice(down)
        node.start(skew_hours=node.skew_hours)
        self.fault("restart", node=node.name, skew_hours=node.skew_hours)

    def op_clock(self, up: list[Node], down: list[Node]) -> None:
        victims = [n for n in up if n.index != 0]
        if not victims:
            return
        node = self.rng.choice(victims)
        skew = 0 if node.skew_hours else self.rng.choice((-9, -5, -2, 2, 5, 9))
        node.kill(signal.SIGKILL)
        node.start(skew_hours=skew)
        self.fault("clock", node=node.name, skew_hours=skew)

    def op_cut(self, up: list[Node], down: list[Node]) -> None:
        i = self.rng.randrange(len(self.nodes))
        self.lan.cut(i)
        self.fault("cut", node=self.nodes[i].name)

    def op_mend(self, up: list[Node], down: list[Node]) -> None:
        i = self.rng.choice(sorted(self.lan.cut_hosts))
        self.lan.mend(i)
        self.fault("mend", node=self.nodes[i].name)

    def op_split(self, up: list[Node], down: list[Node]) -> None:
        group = set(self.rng.sample(range(len(self.nodes)), self.rng.randint(1, 2)))
        self.lan.split(group)
        self.fault("partition", side=sorted(self.nodes[i].name for i in group))

    def op_heal(self, up: list[Node], down: list[Node]) -> None:
        self.lan.heal()
        self.fault("heal")

    def op_netem(self, up: list[Node], down: list[Node]) -> None:
        i = self.rng.randrange(len(self.nodes))
        loss, delay = self.rng.choice((1, 5, 15)), self.rng.choice((5, 50, 200))
        spec = ("loss", f"{loss}%", "delay", f"{delay}ms", f"{delay // 2}ms", "reorder", "25%")
        self.lan.netem(i, *spec)
        self.fault("netem", node=self.nodes[i].name, spec=" ".join(spec))

    def op_slow(self, up: list[Node], down: list[Node]) -> None:
        i = self.rng.randrange(len(self.nodes))
        spec = self.rng.choice(SLOW_LINKS)
        self.lan.netem(i, *spec, qdisc="tbf")
        self.fault("slow-link", node=self.nodes[i].name, spec=" ".join(spec))

    def op_reorder(self, up: list[Node], down: list[Node]) -> None:
        i = self.rng.randrange(len(self.nodes))
        fast, slow, queue = self.rng.choice(REORDER_LINKS)
        self.lan.reorder(i, fast, slow, queue)
        self.fault("reorder-link", node=self.nodes[i].name, spec=f"{fast} {slow} {queue}")

    def op_calm(self, up: list[Node], down: list[Node]) -> None:
        i = self.rng.choice(sorted(self.lan.netem_hosts))
        self.lan.clear_netem(i)
        self.fault("netem-clear", node=self.nodes[i].name)

    # --- the end ---------------------------------------------------------------------------

    def heal_everything(self) -> None:
        self.lan.heal_all()
        for node in self.nodes:
            if not node.up:
                node.start(skew_hours=node.skew_hours)
        self.fault("final-heal")

    def usage(self) -> dict[int, tuple[int, int]]:
        return {n.index: n.usage() for n in self.nodes if n.up}

    def must_may(self, m: Sent) -> tuple[set[int], set[int]]:
        circle = self.circles[m.circle]
        final = circle.epochs[circle.epoch]
        spans = circle.members(m.lo, m.hi)
        must = {m.author}
        # A member removed since may have been cut off with moments nobody else got yet:
        # those stay hers (sync.md section 6, known limits; the soak found it).
        if m.lo == m.hi and m.author in final:
            must |= spans[0] & final
        may = set().union(*spans) | {m.author}
        return must, may

    def snapshot(self, node: Node) -> dict[str, dict[str, Any]]:
        """Every post the node's feed shows, by id; fails on a duplicate."""
        posts: dict[str, dict[str, Any]] = {}
        cursor = ""
        for _ in range(10_000):
            query = "/moments?limit=200" + (f"&cursor={cursor}" if cursor else "")
            status, page = node.api("GET", query)
            assert status == 200, page
            for post in page["moments"]:
                assert post["id"] not in posts, f"{node.name} shows {post['id']} twice"
                posts[post["id"]] = post
            cursor = page["next_cursor"] or ""
            if not cursor:
                return posts
        raise AssertionError("a feed of more than 2 million posts")

    def problems(self) -> tuple[list[str], list[str]]:
        """(what is not there yet, what must never be): empty lists once converged."""
        missing: list[str] = []
        wrong: list[str] = []
        checks = 0
        by_identity = {n.identity: n.index for n in self.nodes}
        for node in self.nodes:
            feed = self.snapshot(node)
            comments: dict[str, str] = {}
            reactions: set[tuple[str, int, str]] = set()
            for post in feed.values():
                for c in post["comments"]:
                    if c["id"] in comments:
                        wrong.append(f"{node.name}: comment {c['id'][:12]} twice")
                    comments[c["id"]] = post["id"]
                for emoji, people in post["reactions_by"].items():
                    who = [by_identity.get(p["identity"], -1) for p in people]
                    if len(who) != len(set(who)):
                        wrong.append(f"{node.name}: {emoji} twice by one person on a post")
                    reactions |= {(post["id"], w, emoji) for w in who}
            for m in self.sent.values():
                must, may = self.must_may(m)
                parent = self.sent.get(m.parent) if m.parent else None
                if parent is not None:
                    if parent.retracted_by is not None:
                        continue  # its comments and reactions went with it
                    must &= self.must_may(parent)[0]
                if m.kind == "react":
                    held = (m.parent, m.author, m.emoji) in reactions
                elif m.kind == "comment":
                    held = m.id in comments
                else:
                    held = m.id in feed
                checks += 1
                where = f"{node.name}: {m.kind} {m.id[:12]} of {self.nodes[m.author].name}"
                # A post retracted before it reached someone need not reach her at all:
                # the retraction deletes it wherever it comes first (moments.md section 6).
                if node.index in must and not held and m.retracted_by is None:
                    missing.append(f"{where} missing")
                if node.index not in may and held:
                    wrong.append(f"{where} held by someone who should not have it")
                if not held or m.kind not in ("post", "photo", "file"):
                    continue
                post = feed[m.id]
                retraction = m.retracted_by
                if retraction is not None:
                    told = node.index in must and node.index in self.must_may(retraction)[0]
                    if told and (not post["retracted"] or post["text"]):
                        missing.append(f"{where}: retraction not honoured yet")
                elif not post["retracted"]:
                    if post["text"] != m.text:
                        wrong.append(f"{where}: text {post['text']!r} is not {m.text!r}")
                    for blob in post["photos"] + post["files"]:
                        if node.index in must and blob["chunks_held"] != blob["chunks"]:
                            missing.append(f"{where}: {blob['chunks_held']}/{blob['chunks']}")
        self.figures.checks = checks
        self.figures.moments = len(self.sent)
        return missing, wrong

    def converge(self, timeout: float) -> list[str]:
        """Wait until nothing is missing; return what is wrong (or still missing)."""
        start = last_said = time.monotonic()
        missing, wrong = self.problems()
        while missing and not wrong and time.monotonic() - start < timeout:
            time.sleep(2)  # polling the daemons' APIs; each round reads every feed
            missing, wrong = self.problems()
            if time.monotonic() - last_said > 30:
                last_said = time.monotonic()
                print(
                    f"soak: {time.monotonic() - start:.0f} s after the heal, "
                    f"{len(missing)} missing, e.g. {missing[:3]}",
                    flush=True,
                )
        self.figures.converge_seconds = time.monotonic() - start
        if missing:
            for node in self.nodes:
                status, peers = node.api("GET", "/peers")
                names = sorted(p["name"] for p in peers["peers"]) if status == 200 else status
                print(f"soak: {node.name} linked to {names}", flush=True)
        return wrong + missing

    def check_bytes(self) -> list[str]:
        """Every file whole (its hash), every photo the same at every member as at its author."""
        bad: list[str] = []
        for m in self.sent.values():
            if m.retracted_by is not None or not (m.files or m.photos):
                continue
            must, _ = self.must_may(m)
            for i in sorted(must):
                node = self.nodes[i]
                for n, digest in enumerate(m.files, 1):
                    got = node.sha256(f"/moments/{m.id}/files/{n}")
                    if got != digest:
                        bad.append(f"{node.name}: file {n} of {m.id[:12]} hashes to {got}")
                for n in range(1, m.photos + 1):
                    want = self.nodes[m.author].sha256(f"/moments/{m.id}/photos/{n}")
                    got = node.sha256(f"/moments/{m.id}/photos/{n}")
                    if got != want or got is None:
                        bad.append(f"{node.name}: photo {n} of {m.id[:12]} differs")
        return bad


def integrity(home: Path) -> str:
    """SQLite's integrity_check of a (stopped) daemon's store."""
    with sqlite3.connect(home / "data" / "p2pmoments.db") as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
