"""A file's key and identity, how identities compare, and what a journal proves loaded."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkload._ledger import (
    Completion,
    FileIdentity,
    Verdict,
    compare,
    file_md5,
    key_for,
    proven_from_manifest,
    remote_etag,
)

# -- keys -------------------------------------------------------------------------------------


def test_a_relative_path_is_the_same_key_from_any_directory(tmp_path: Path) -> None:
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "a.jsonl").write_text("{}\n")
    from_top = key_for("exports/a.jsonl", cwd=tmp_path)
    from_inside = key_for("a.jsonl", cwd=tmp_path / "exports")
    from_elsewhere = key_for("../exports/./a.jsonl", cwd=tmp_path / "exports")
    assert from_top == from_inside == from_elsewhere == str(tmp_path / "exports/a.jsonl")


def test_a_file_reached_through_links_is_keyed_by_where_it_is(tmp_path: Path) -> None:
    real = tmp_path / "2024-12-01"
    real.mkdir()
    (real / "a.jsonl").write_text("{}\n")
    (tmp_path / "latest").symlink_to(real)
    (tmp_path / "alias.jsonl").symlink_to(real / "a.jsonl")
    assert key_for("latest/a.jsonl", cwd=tmp_path) == str(real / "a.jsonl")
    assert key_for("alias.jsonl", cwd=tmp_path) == str(real / "a.jsonl")


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("s3://exports/products/a.jsonl.gz", "s3://exports/products/a.jsonl.gz"),
        ("S3://exports/Products/A.jsonl", "s3://exports/Products/A.jsonl"),
        (
            "https://Cdn.Example.com/x.jsonl?X-Amz-Signature=abc#top",
            "https://cdn.example.com/x.jsonl",
        ),
        ("https://user:secret@host:8443/x.jsonl", "https://host:8443/x.jsonl"),
        ("http://[::1]:9000/b/x.jsonl", "http://[::1]:9000/b/x.jsonl"),
        ("gs://bucket/dir/x.jsonl", "gs://bucket/dir/x.jsonl"),
        ("-", "-"),
    ],
)
def test_a_url_keeps_no_credential_and_folds_only_scheme_and_host(url: str, key: str) -> None:
    assert key_for(url) == key
    assert key_for(key) == key  # a key is its own key


def test_an_object_identity_comes_from_its_listing(tmp_path: Path) -> None:
    identity = FileIdentity.of_object(
        "s3://b/x.jsonl?versionId=3",
        size=10,
        etag=remote_etag({"ETag": '"9a0364b9e99bb480dd25e1f0284c8555"'}),
    )
    assert identity.key == "s3://b/x.jsonl" and identity.display == "s3://b/x.jsonl"
    assert identity.etag == "etag:9a0364b9e99bb480dd25e1f0284c8555"


@pytest.mark.parametrize(
    ("info", "token"),
    [
        ({"ETag": '"abc"', "size": 1}, "etag:abc"),
        ({"md5Hash": "q1w2==", "generation": 5, "etag": "CAE="}, "md5:q1w2=="),
        ({"crc32c": "AAAA", "generation": 5}, "crc32c:AAAA"),
        ({"generation": 1733011200}, "generation:1733011200"),
        ({"VersionId": "v7", "size": 3}, "version:v7"),
        ({"etag": "W/xyz"}, "etag:W/xyz"),
        ({"size": 3}, None),
    ],
)
def test_the_remote_identity_token_prefers_content_checksums(info: dict, token: str) -> None:
    assert remote_etag(info) == token


def test_content_md5_is_md5sum(tmp_path: Path) -> None:
    data = os.urandom(3 * 2**20 + 17)
    path = tmp_path / "x.jsonl.gz"
    path.write_bytes(data)
    assert file_md5(path) == hashlib.md5(data).hexdigest()


# -- comparing --------------------------------------------------------------------------------

BASE = FileIdentity(key="/x", size=100, mtime_ns=1_000, etag="etag:e1", content_md5="m1")


@pytest.mark.parametrize(
    ("recorded", "now", "verdict", "words"),
    [
        (BASE, BASE, Verdict.SAME, "same content MD5"),
        (BASE, FileIdentity(key="/x", size=101, mtime_ns=1_000), Verdict.CHANGED, "size 100 → 101"),
        (BASE, FileIdentity(key="/x", size=100, mtime_ns=9, content_md5="m1"), Verdict.SAME, "MD5"),
        (BASE, FileIdentity(key="/x", size=100, mtime_ns=1_000, content_md5="m2"),
         Verdict.CHANGED, "content MD5 differs"),
        (BASE, FileIdentity(key="/x", size=100, etag="etag:e1"), Verdict.SAME, "same etag"),
        (BASE, FileIdentity(key="/x", size=100, etag="etag:e2"), Verdict.CHANGED, "etag e1 → e2"),
        # Tokens of different kinds say nothing about each other: time and size decide.
        (BASE, FileIdentity(key="/x", size=100, mtime_ns=1_000, etag="generation:4"),
         Verdict.SAME, "same size and modification time"),
        (BASE, FileIdentity(key="/x", size=100, mtime_ns=2_000), Verdict.CHANGED, "(same size)"),
        (FileIdentity(key="/x", mtime_ns=5), FileIdentity(key="/x", mtime_ns=5),
         Verdict.UNKNOWN, "its size is unknown"),
        (FileIdentity(key="/x", size=5), FileIdentity(key="/x", size=5), Verdict.UNKNOWN,
         "no modification time"),
        (BASE, FileIdentity.unidentified("-"), Verdict.UNKNOWN, "no identity"),
    ],
)  # fmt: skip
def test_identities_compare_on_the_strongest_evidence_both_sides_have(
    recorded: FileIdentity, now: FileIdentity, verdict: Verdict, words: str
) -> None:
    seen = compare(recorded, now)
    assert seen.verdict is verdict
    assert words in seen.detail


sizes = st.none() | st.integers(0, 3)
times = st.none() | st.integers(0, 3)
tokens = st.none() | st.sampled_from(["etag:a", "etag:b", "generation:1", "generation:2"])
md5s = st.none() | st.sampled_from(["m1", "m2"])
identities = st.builds(
    FileIdentity, key=st.just("/x"), size=sizes, mtime_ns=times, etag=tokens, content_md5=md5s
)


@given(identities, identities)
def test_comparing_never_calls_a_file_the_same_against_the_evidence(
    a: FileIdentity, b: FileIdentity
) -> None:
    seen = compare(a, b)
    assert seen.verdict is compare(b, a).verdict  # symmetric
    if seen.verdict is Verdict.SAME:
        # Some evidence says so, and none says otherwise.
        assert not (a.size is not None and b.size is not None and a.size != b.size)
        assert not (a.content_md5 and b.content_md5 and a.content_md5 != b.content_md5)
        by_md5 = a.content_md5 is not None and a.content_md5 == b.content_md5
        by_token = a.etag is not None and a.etag == b.etag
        by_time = a.size is not None and a.size == b.size and a.mtime_ns == b.mtime_ns
        assert by_md5 or by_token or (by_time and a.mtime_ns is not None)
    if a == b and a.size is not None and (a.mtime_ns, a.etag, a.content_md5) != (None,) * 3:
        assert seen.verdict is Verdict.SAME  # a file is itself


# -- what a journal proves --------------------------------------------------------------------


@st.composite
def journals(draw: st.DrawFn) -> tuple[list[int], list[list[int]], int, list[bool], bool]:
    """Files (their line counts, some 0), lines cut into shards in order, how many shards a
    run journaled before it stopped, which of those were uploaded, and whether it finished."""
    lines = draw(st.lists(st.integers(0, 4), min_size=1, max_size=7))
    owners = [f for f, n in enumerate(lines) for _ in range(n)]
    shards: list[list[int]] = []
    at = 0
    while at < len(owners):
        size = draw(st.integers(1, 4))
        shards.append(owners[at : at + size])
        at += size
    journaled = draw(st.integers(0, len(shards)))
    uploaded = [draw(st.booleans()) for _ in range(journaled)]
    finished = journaled == len(shards) and draw(st.booleans())
    return lines, shards, journaled, uploaded, finished


@settings(max_examples=300)
@given(journals(), st.data())
def test_a_file_is_proven_loaded_only_when_all_of_it_went_up(
    journal: tuple[list[int], list[list[int]], int, list[bool], bool], data: st.DataObject
) -> None:
    lines, shards, journaled, uploaded, finished = journal
    inputs = [FileIdentity(key=f"/f{i}", display=f"f{i}", size=n) for i, n in enumerate(lines)]
    tracker = Completion(inputs)
    # Shards are journaled in order; each upload lands at some moment after its shard.
    events = [("shard", i) for i in range(journaled)]
    for i in range(journaled):
        if uploaded[i]:
            after = events.index(("shard", i)) + 1
            events.insert(data.draw(st.integers(after, len(events))), ("uploaded", i))
    proven: list[str] = []
    for kind, index in events:
        if kind == "shard":
            tracker.shard(index, [f"f{f}" for f in shards[index]])
        else:
            tracker.uploaded(index, f"req_{index}")
        proven += [p.identity.display for p in tracker.take()]
    if finished:
        tracker.all_read()
        proven += [p.identity.display for p in tracker.take()]
    assert len(proven) == len(set(proven)), "each file is reported once"
    truly = set()
    for f, n in enumerate(lines):
        holding = [i for i, s in enumerate(shards) if f in s]
        whole = all(i < journaled for i in holding) and (n > 0 or finished or any(
            g > f for i in range(journaled) for g in shards[i]))  # fmt: skip
        if whole and all(uploaded[i] for i in holding):
            truly.add(f"f{f}")
    assert set(proven) <= truly, "never a file with lines that did not go up"
    read_past = {f for i in range(journaled) for f in shards[i]}
    frontier = len(lines) if finished else max(read_past, default=-1)
    knowable = {x for x in truly if int(x[1:]) < frontier}
    assert knowable <= set(proven), "every file known to be whole and up is reported"
    if finished:
        assert set(proven) == truly
    # The manifest of the same run proves the same files.
    doc = {
        "namespace": "products",
        "run_id": "r",
        "cwd": "/",
        "finished_at": "2024-12-01T00:00:00Z" if finished else None,
        "inputs": [{"path": f"f{i}", "key": f"/f{i}", "size": n} for i, n in enumerate(lines)],
        "shards": [
            {
                "index": i,
                "status": "uploaded" if uploaded[i] else "pending",
                "request_id": f"req_{i}",
                "sources": [{"path": f"f{f}"} for f in dict.fromkeys(shards[i])],
            }
            for i in range(journaled)
        ],
    }
    assert {p.identity.display for p in proven_from_manifest(doc).files} == set(proven)


def test_completion_names_the_shards_and_requests_of_each_file() -> None:
    inputs = [FileIdentity(key=f"/{n}", display=n, size=1) for n in ("a", "b", "-")]
    inputs[2] = FileIdentity.unidentified("-")
    tracker = Completion(inputs)
    tracker.shard(0, ["a"])
    tracker.shard(1, ["a", "b"])
    tracker.uploaded(1, "req_1")
    assert tracker.take() == []  # shard 0 is not up yet
    tracker.uploaded(0, "req_0")
    [a] = tracker.take()
    assert (a.identity.display, a.shards, a.request_ids) == ("a", (0, 1), ("req_0", "req_1"))
    tracker.shard(2, ["b", "-"])
    tracker.uploaded(2, "req_2")
    tracker.all_read()
    [b] = tracker.take()  # standard input is never reported: it cannot be recognised
    assert (b.identity.display, b.shards) == ("b", (1, 2))
    assert [i.display for i in tracker.unloaded()] == []
    with pytest.raises(ValueError, match="given twice"):
        Completion([inputs[0], inputs[0]])
