"""The command line, as a user (and our acceptance checks) drive it: real processes, real etcd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from etcdcron.job import jitter_offset_ms
from etcdcron.keys import Keys
from etcdcron.localetcd import free_port
from eventually import eventually

from .processes import MemberProcess


def etcdcron(
    *args: str, endpoint: str | None = None, prefix: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if endpoint:
        env["ETCDCRON_ENDPOINTS"] = endpoint
    if prefix:
        env["ETCDCRON_PREFIX"] = prefix
    return subprocess.run(
        [sys.executable, "-m", "etcdcron.cli", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_add_get_list_delete(etcd_endpoint, prefix):
    run = lambda *a: etcdcron(*a, endpoint=etcd_endpoint, prefix=prefix)  # noqa: E731
    added = run(
        "add",
        "nightly",
        "--schedule",
        "30 1 * * *",
        "--time-zone",
        "America/New_York",
        "--type",
        "report",
        "--payload",
        "hi",
        "--max-runs",
        "5",
        "--ttl",
        "48h",
        "--namespace",
        "ops",
    )
    assert added.returncode == 0, added.stderr
    doc = json.loads(added.stdout)
    assert doc["name"] == "nightly" and doc["namespace"] == "ops" and doc["maxRuns"] == 5
    assert doc["nextScheduled"].endswith(":30:00.000Z")
    got = run("get", "nightly", "--namespace", "ops")
    assert got.returncode == 0 and json.loads(got.stdout)["schedule"] == "30 1 * * *"
    listed = run("list", "--namespace", "ops", "-o", "json")
    assert [d["name"] for d in json.loads(listed.stdout)] == ["nightly"]
    table = run("list", "--namespace", "ops")
    assert "NIGHTLY" not in table.stdout and "nightly" in table.stdout and "NAME" in table.stdout
    assert json.loads(run("list", "-o", "json").stdout) == []  # another tenant
    assert run("delete", "nightly", "--namespace", "ops").returncode == 0
    missing = run("get", "nightly", "--namespace", "ops")
    assert missing.returncode == 1 and "not found" in missing.stderr


async def test_list_shows_the_good_jobs_and_reports_each_bad_entry(etcd_endpoint, prefix, etcd_client):
    run = lambda *a: etcdcron(*a, endpoint=etcd_endpoint, prefix=prefix)  # noqa: E731
    assert run("add", "fine", "--schedule", "@daily").returncode == 0
    keys = Keys(prefix)
    broken, copied = keys.job(keys.ref("default", "broken")), keys.job(keys.ref("default", "copied"))
    await etcd_client.put(broken, b"[1, 2]")
    await etcd_client.put(copied, (await etcd_client.get(keys.job(keys.ref("default", "fine")))).value)
    listed = run("list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    docs = {d["name"]: d for d in json.loads(listed.stdout)}
    assert docs["fine"]["schedule"] == "@daily" and "error" not in docs["fine"]
    assert docs["broken"]["error"] == "value is a JSON list, not an object"
    assert docs["broken"]["key"] == broken.decode() and docs["broken"]["namespace"] == "default"
    assert docs["copied"]["error"] == "holds job default/fine, not default/copied"
    table = run("list")
    assert table.returncode == 0 and "fine" in table.stdout
    assert f"error: {broken.decode()}: value is a JSON list, not an object" in table.stderr
    got = run("get", "broken")
    assert got.returncode == 1
    assert (
        got.stderr.strip()
        == f"etcdcron: error: bad entry {broken.decode()}: value is a JSON list, not an object"
    )


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["add", "x", "--schedule", "* * *"], "--schedule"),
        (["add", "x", "--schedule", "@daily", "--time-zone", "Nowhere/City"], "--time-zone"),
        (["add", "Bad_Name", "--schedule", "@daily"], "NAME"),
        (["add", "x", "--schedule", "@daily", "--ttl", "soon"], "--ttl"),
        (["add", "x", "--schedule", "@daily", "--max-runs", "0"], "--max-runs"),
        (["add", "x", "--schedule", "@daily", "--catch-up", "some"], "--catch-up"),
        (["add", "x", "--schedule", "@daily", "--start-at", "tomorrow"], "--start-at"),
        (["add", "x", "--schedule", "@daily", "--delay", "-5s"], "--delay"),
        (["list", "--namespace", "UPPER"], "--namespace"),
        (["add", "x"], "--schedule"),
        (["list", "--endpoints", "nonsense"], "--endpoints"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_field(args, flag, etcd_endpoint, prefix):
    result = etcdcron(*args, endpoint=etcd_endpoint, prefix=prefix)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert flag in lines[0], lines[0]


def test_every_command_works_with_any_live_endpoint_in_the_list(etcd_endpoint, prefix):
    dead = f"127.0.0.1:{free_port()}"
    for endpoints in (f"{dead},{etcd_endpoint}", f"{etcd_endpoint},{dead}"):
        run = lambda *a, e=endpoints: etcdcron(*a, "--endpoints", e, prefix=prefix)  # noqa: E731
        added = run("add", "anywhere", "--schedule", "@daily")
        assert added.returncode == 0, added.stderr
        got = run("get", "anywhere")
        assert got.returncode == 0 and json.loads(got.stdout)["name"] == "anywhere", got.stderr
        listed = run("list", "-o", "json")
        assert listed.returncode == 0 and [d["name"] for d in json.loads(listed.stdout)] == ["anywhere"]
        deleted = run("delete", "anywhere")
        assert deleted.returncode == 0, deleted.stderr


def test_all_endpoints_down_names_each_of_them():
    dead = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    result = etcdcron("list", "--timeout", "1", "--endpoints", ",".join(dead))
    assert result.returncode == 1
    assert "all 2 endpoints failed" in result.stderr and all(d in result.stderr for d in dead), result.stderr


def test_unreachable_etcd_exits_1_with_a_clear_message():
    result = etcdcron("list", "--timeout", "1", endpoint=f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "cannot reach etcd" in result.stderr


def test_member_prints_one_json_line_per_firing_and_leaves_on_sigterm(etcd_endpoint, prefix):
    member = MemberProcess("cli-m", etcd_endpoint, prefix).start()
    try:
        assert (
            etcdcron(
                "add",
                "tick",
                "--schedule",
                "* * * * * *",
                "--type",
                "t",
                "--payload",
                "p",
                endpoint=etcd_endpoint,
                prefix=prefix,
            ).returncode
            == 0
        )
        eventually(lambda: len(member.firings) >= 2, 10, "two firings")
        first = member.firings[0]
        assert set(first) >= {"namespace", "name", "type", "scheduled", "fired", "run", "member", "payload"}
        assert (first["namespace"], first["name"], first["type"], first["payload"]) == (
            "default",
            "tick",
            "t",
            "p",
        )
        assert first["member"] == "cli-m" and first["run"] == 1 and member.firings[1]["run"] == 2
        scheduled = datetime.fromisoformat(first["scheduled"].replace("Z", "+00:00"))
        assert first["scheduled"].endswith(".000Z") and scheduled.tzinfo == UTC
        started = time.monotonic()
        assert member.terminate() == 0, member.log()
        assert time.monotonic() - started < 5
    finally:
        member.stop()
    # Leaving revokes the member's lease, never the jobs: the job is still stored.
    got = etcdcron("get", "tick", endpoint=etcd_endpoint, prefix=prefix)
    assert got.returncode == 0


def test_dev_runs_the_embedded_demo():
    result = subprocess.run(
        [sys.executable, "-m", "etcdcron.cli", "dev", "--seconds", "5", "--schedule", "* * * * * *"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    firings = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(firings) >= 2
    ticks = [f["scheduled"] for f in firings]
    assert len(ticks) == len(set(ticks))


def test_add_if_not_exists_reports_an_existing_job_in_one_line_and_exits_1(etcd_endpoint, prefix):
    run = lambda *a: etcdcron(*a, endpoint=etcd_endpoint, prefix=prefix)  # noqa: E731
    first = run("add", "once", "--schedule", "@daily", "--payload", "v1", "--if-not-exists")
    assert first.returncode == 0, first.stderr
    again = run("add", "once", "--schedule", "@hourly", "--payload", "v2", "--if-not-exists")
    assert again.returncode == 1
    assert again.stderr.strip() == "etcdcron: error: job default/once already exists"
    assert again.stdout == ""
    assert json.loads(run("get", "once").stdout)["payload"] == "v1"
    assert run("add", "once", "--schedule", "@hourly", "--payload", "v3").returncode == 0  # replaces
    assert json.loads(run("get", "once").stdout)["payload"] == "v3"


def test_add_takes_iso_8601_durations_and_an_expiry_instant(etcd_endpoint, prefix):
    run = lambda *a: etcdcron(*a, endpoint=etcd_endpoint, prefix=prefix)  # noqa: E731
    before = datetime.now(UTC)
    iso = run("add", "iso", "--schedule", "@daily", "--ttl", "P1DT2H", "--delay", "PT90S")
    assert iso.returncode == 0, iso.stderr
    doc = json.loads(iso.stdout)
    assert doc["ttl"] == 26 * 3600
    start = datetime.fromisoformat(doc["startAt"].replace("Z", "+00:00"))
    assert 89 <= (start - before).total_seconds() <= 90 + 30  # 30 s of slack for a loaded machine
    expiry = (before.replace(microsecond=0) + timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    until = run("add", "until", "--schedule", "@hourly", "--ttl", expiry)
    assert until.returncode == 0, until.stderr
    doc = json.loads(until.stdout)
    expires = datetime.fromisoformat(doc["expiresAt"].replace("Z", "+00:00"))
    assert abs((expires - datetime.fromisoformat(expiry.replace("Z", "+00:00"))).total_seconds()) < 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ttl", "P1M"], "--ttl: 'P1M': months have no fixed length"),
        (["--ttl", "2020-01-01T00:00:00Z"], "--ttl: '2020-01-01T00:00:00Z' is not in the future"),
        (["--ttl", "2999-01-01T00:00:00"], "--ttl: '2999-01-01T00:00:00' needs a UTC offset or Z"),
        (["--delay", "P1Y"], "--delay: 'P1Y': years have no fixed length"),
        (["--start-at", "2026-12-01T09:00:00"], "--start-at: '2026-12-01T09:00:00' needs a UTC offset or Z"),
    ],
)
def test_bad_times_exit_2_naming_the_flag(args, message, etcd_endpoint, prefix):
    result = etcdcron("add", "x", "--schedule", "@daily", *args, endpoint=etcd_endpoint, prefix=prefix)
    assert result.returncode == 2, result
    assert result.stderr.strip().startswith(f"etcdcron: error: {message}"), result.stderr


def test_delete_by_name_prefix_prints_how_many(etcd_endpoint, prefix):
    run = lambda *a: etcdcron(*a, endpoint=etcd_endpoint, prefix=prefix)  # noqa: E731
    for name in ("job-1", "job-10", "job-2"):
        assert run("add", name, "--schedule", "@daily").returncode == 0
    assert run("add", "job-1", "--schedule", "@daily", "--namespace", "other").returncode == 0
    deleted = run("delete", "--name-prefix", "job-1")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == "deleted 2 jobs of default whose name starts with 'job-1'"
    assert [d["name"] for d in json.loads(run("list", "-o", "json").stdout)] == ["job-2"]
    # The issue's spelling: a --prefix that is no key prefix (no leading '/') is the name prefix; the key
    # prefix then comes from ETCDCRON_PREFIX (set by run()) or the default.
    issue = run("delete", "--prefix", "job-")
    assert issue.returncode == 0, issue.stderr
    assert issue.stdout.strip() == "deleted 1 job of default whose name starts with 'job-'"
    assert json.loads(run("list", "-o", "json").stdout) == []
    assert [d["name"] for d in json.loads(run("list", "-n", "other", "-o", "json").stdout)] == ["job-1"]
    none = run("delete", "--name-prefix", "job-", "--prefix", prefix)  # --prefix with '/': the key prefix
    assert none.returncode == 0 and none.stdout.startswith("deleted 0 jobs"), none


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["delete", "x", "--name-prefix", "x"], "--name-prefix: give NAME or --name-prefix, not both"),
        (["delete"], "NAME: give the job's NAME, or --name-prefix P to delete every job named P..."),
        (["delete", "--name-prefix", "Bad"], "--name-prefix: 'Bad' does not start a job name"),
        (["delete", "--prefix", "Bad"], "--prefix: 'Bad' does not start a job name"),
        (["delete", "--name-prefix", ""], "--name-prefix: must not be empty"),
    ],
)
def test_delete_by_name_prefix_bad_input_exits_2(args, message, etcd_endpoint, prefix):
    result = etcdcron(*args, endpoint=etcd_endpoint, prefix=prefix)
    assert result.returncode == 2, result
    assert result.stderr.strip().startswith(f"etcdcron: error: {message}"), result.stderr


def test_add_with_jitter_shows_it_and_the_next_due_time(etcd_endpoint, prefix):
    run = lambda *a: etcdcron(*a, endpoint=etcd_endpoint, prefix=prefix)  # noqa: E731
    added = run("add", "spread", "--schedule", "0 * * * * *", "--jitter", "PT30S")
    assert added.returncode == 0, added.stderr
    doc = json.loads(run("get", "spread").stdout)
    assert doc["jitter"] == 30.0
    nominal = datetime.fromisoformat(doc["nextScheduled"].replace("Z", "+00:00"))
    due = datetime.fromisoformat(doc["nextDue"].replace("Z", "+00:00"))
    assert nominal.second == 0 and (due - nominal) == timedelta(
        milliseconds=jitter_offset_ms("default", "spread", 30_000)
    )
    plain = json.loads(run("add", "plain", "--schedule", "@daily").stdout)
    assert plain["jitter"] is None and plain["nextDue"] == plain["nextScheduled"]
    too_wide = run("add", "x", "--schedule", "* * * * * *", "--jitter", "2s")
    assert too_wide.returncode == 2
    assert too_wide.stderr.startswith(
        "etcdcron: error: --jitter: must be at most the schedule's shortest interval"
    )
