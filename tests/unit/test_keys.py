from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etcdcron.keys import Keys, cursor_of_job_key, partition_of, range_end

names = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,20}[a-z0-9])?", fullmatch=True)
tenants = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)


def test_layout() -> None:
    keys = Keys("/etcdcron", 256)
    ref = keys.ref("team-a", "job0")
    assert keys.job(ref) == f"/etcdcron/jobs/{ref.partition:04d}/team-a/job0".encode()
    assert keys.cursor(ref) == f"/etcdcron/cursors/{ref.partition:04d}/team-a/job0".encode()
    assert keys.member("m1") == b"/etcdcron/members/m1"
    assert keys.partition(7) == b"/etcdcron/partitions/0007"
    assert keys.partition_of_key(keys.partition(7)) == 7


def test_partition_is_stable_across_runs() -> None:
    # Pinned values: if the hash ever changed, stored jobs would sit in the wrong partition.
    assert [partition_of("default", f"job{i}", 256) for i in range(3)] == [138, 78, 184]
    assert partition_of("team-a", "nightly", 1024) == 383


@given(tenants, names)
def test_parse_job_key_inverts_job(tenant: str, name: str) -> None:
    keys = Keys("/p", 64)
    ref = keys.ref(tenant, name)
    assert keys.parse_job_key(keys.job(ref)) == ref
    assert 0 <= ref.partition < 64


@given(st.sampled_from(["/p", "/jobs", "/a/jobs/b", "/etcdcron"]), tenants, names)
def test_a_cursor_key_derives_from_its_job_key(prefix: str, tenant: str, name: str) -> None:
    keys = Keys(prefix, 256)
    ref = keys.ref(tenant, name)
    assert cursor_of_job_key(keys.job(ref)) == keys.cursor(ref)


def test_a_cursor_key_derives_only_from_a_job_key() -> None:
    with pytest.raises(ValueError, match="not a job key"):
        cursor_of_job_key(Keys("/p").cursor(Keys("/p").ref("t", "n")))


@given(tenants, tenants, names)
def test_tenant_prefixes_never_overlap(a: str, b: str, name: str) -> None:
    keys = Keys("/p", 16)
    if a == b:
        return
    ref = keys.ref(b, name)
    prefix = keys.jobs_of_tenant_in_partition(a, ref.partition)
    assert not keys.job(ref).startswith(prefix)


def test_range_end() -> None:
    assert range_end(b"/a/") == b"/a0"
    assert range_end(b"a\xff") == b"b"
    assert range_end(b"\xff") == b"\0"


@pytest.mark.parametrize("prefix", ["etcdcron", "/etcdcron/", ""])
def test_bad_prefix(prefix: str) -> None:
    with pytest.raises(ValueError):
        Keys(prefix)
