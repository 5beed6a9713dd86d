"""The Kubernetes dispatcher's pure parts: what an answer means, what a resource's Jobs call for before
and after a tick's Job, how often its history is listed; the session's credentials and TLS from the
kubernetes client's configuration."""

from __future__ import annotations

import ssl
from typing import Any

import pytest
from kubernetes import client as k8s

from etcdcron.dispatch.k8s_api import ApiSession, auth_headers, proxy_of, ssl_context
from etcdcron.dispatch.k8s_rules import (
    BeforeCreate,
    HistoryPacer,
    ListedJob,
    Verdict,
    before_create,
    beyond_history,
    history_limits,
    namespace_terminating,
    owned_jobs,
    verdict,
    without_name,
)
from etcdcron.dispatch.kubernetes import DEFAULT_IN_FLIGHT, KubernetesDispatcher


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, Verdict.CREATED),
        (201, Verdict.CREATED),
        (202, Verdict.CREATED),
        (409, Verdict.EXISTS),
        (400, Verdict.FINAL),
        (401, Verdict.FINAL),
        (403, Verdict.FINAL),
        (404, Verdict.FINAL),
        (422, Verdict.FINAL),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (504, Verdict.RETRY),
        (302, Verdict.RETRY),  # not an answer the API server gives to a create: not taken as done
    ],
)
def test_verdict(status, expected):
    assert verdict(status) is expected


@pytest.mark.parametrize(
    ("text", "name", "expected"),
    [
        ('422 Invalid: Job.batch "d0-17" is invalid', "d0-17", "422 Invalid: Job.batch is invalid"),
        ("DELETE /jobs/d0-17: refused", "d0-17", "DELETE /jobs/<name>: refused"),
        ("500 Internal Server Error", "d0-17", "500 Internal Server Error"),
        ("no name to take out", "", "no name to take out"),
    ],
)  # fmt: skip
def test_without_name(text, name, expected):
    assert without_name(text, name) == expected


def job(
    name: str, created: str, owner: str = "u1", outcome: str | None = None, deleting: bool = False
) -> Any:
    status = {"conditions": [{"type": outcome, "status": "True"}]} if outcome else {}
    meta: dict[str, Any] = {"name": name, "creationTimestamp": created, "ownerReferences": [{"uid": owner}]}
    if deleting:
        meta["deletionTimestamp"] = created
    return {"metadata": meta, "status": status}


def test_owned_jobs_are_the_resources_own_by_uid_with_their_outcome():
    items = [
        job("a", "2026-01-01T00:00:01Z"),
        job("b", "2026-01-01T00:00:02Z", owner="an-earlier-resource-of-the-same-name"),
        job("c", "2026-01-01T00:00:03Z", outcome="Complete"),
        job("d", "2026-01-01T00:00:04Z", outcome="Failed", deleting=True),
        {"metadata": {"name": "e"}},  # no owner at all: a label copied by hand
        {"metadata": {"name": "f", "ownerReferences": [{"uid": "u1"}]}, "status": {"conditions": [
            {"type": "Complete", "status": "False"}, {"type": "Suspended", "status": "True"}]}},
    ]  # fmt: skip
    assert owned_jobs(items, "u1") == [
        ListedJob("a", "2026-01-01T00:00:01Z", None, False),
        ListedJob("c", "2026-01-01T00:00:03Z", "Complete", False),
        ListedJob("d", "2026-01-01T00:00:04Z", "Failed", True),
        ListedJob("f", "", None, False),
    ]


RUNNING = ListedJob("r-1", "t1", None, False)
DONE = ListedJob("r-2", "t2", "Complete", False)
GOING = ListedJob("r-3", "t3", None, True)
RUNNING2 = ListedJob("r-4", "t4", None, False)


@pytest.mark.parametrize(
    ("jobs", "name", "policy", "expected"),
    [
        ([], "r-9", "Forbid", BeforeCreate(False, None, ())),
        ([], "r-9", "Replace", BeforeCreate(False, None, ())),
        ([DONE, GOING], "r-9", "Forbid", BeforeCreate(False, None, ())),  # finished or going: not running
        ([DONE, RUNNING], "r-9", "Forbid", BeforeCreate(False, "r-1", ())),
        ([RUNNING, RUNNING2], "r-9", "Forbid", BeforeCreate(False, "r-1", ())),
        ([RUNNING, DONE, RUNNING2, GOING], "r-9", "Replace", BeforeCreate(False, None, ("r-1", "r-4"))),
        ([RUNNING], "r-1", "Forbid", BeforeCreate(True, None, ())),  # its own Job: a retry, done
        ([RUNNING], "r-1", "Replace", BeforeCreate(True, None, ())),  # not deleted by its own retry
        ([RUNNING], "r-9", "Allow", BeforeCreate(False, None, ())),
    ],
)
def test_before_create(jobs, name, policy, expected):
    assert before_create(jobs, name, policy) == expected


def finished(name: str, created: str, outcome: str, deleting: bool = False) -> ListedJob:
    return ListedJob(name, created, outcome, deleting)


C1, C2, C3, C4 = (finished(f"c{i}", f"2026-01-01T00:00:0{i}Z", "Complete") for i in range(1, 5))
F1, F2 = (finished(f"f{i}", f"2026-01-01T00:00:0{i}Z", "Failed") for i in range(1, 3))
F3_GOING = finished("f3", "2026-01-01T00:00:03Z", "Failed", deleting=True)
ACTIVE = ListedJob("a", "2026-01-01T00:00:00Z", None, False)


@pytest.mark.parametrize(
    ("jobs", "limits", "expected"),
    [
        ([], {"Complete": 3, "Failed": 1}, []),
        ([C1, C2, C3], {"Complete": 3, "Failed": 1}, []),
        ([C3, C1, C4, C2], {"Complete": 3, "Failed": 1}, ["c1"]),  # the oldest, whatever the order listed
        ([C1, C2, C3, C4, F1, F2], {"Complete": 1, "Failed": 1}, ["c3", "c2", "c1", "f1"]),
        ([C1, C2, F1, F2], {"Complete": 0, "Failed": 0}, ["c2", "c1", "f2", "f1"]),
        ([ACTIVE, C1, C2], {"Complete": 0, "Failed": 0}, ["c2", "c1"]),  # a running Job is never history
        ([F1, F2, F3_GOING], {"Complete": 3, "Failed": 1}, ["f1"]),  # one already going is not kept
    ],
)
def test_beyond_history(jobs, limits, expected):
    assert beyond_history(jobs, limits) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, {"Complete": 3, "Failed": 1}),
        ({"successfulJobsHistoryLimit": 0, "failedJobsHistoryLimit": 5}, {"Complete": 0, "Failed": 5}),
    ],
)
def test_history_limits(spec, expected):
    assert history_limits(spec) == expected


@pytest.mark.parametrize(
    ("per_second", "calls", "expected"),
    [
        # one resource at 5 lists/s: listed after each Job 0.2 s apart or more
        (5, [("a", 0.0), ("a", 0.1), ("a", 0.2), ("a", 1.2)], [True, False, True, True]),
        # 10 resources every second at 5 lists/s: each listed every 2 s
        (5, [(r, t) for t in (0.0, 1.0, 2.0, 3.0, 4.0) for r in "abcdefghij"],
         [t in (0.0, 2.0, 4.0) for t in (0.0, 1.0, 2.0, 3.0, 4.0) for _ in "abcdefghij"]),
        # a resource not seen for longer than remembered (120 s) no longer slows the others down
        (1, [("a", 0.0), ("b", 0.0), ("b", 1.5), ("b", 200.0), ("b", 201.1)],
         [True, True, False, True, True]),
    ],
)  # fmt: skip
def test_history_pacer(per_second, calls, expected):
    pacer = HistoryPacer(per_second)
    assert [pacer.due(uid, 1000.0 + t) for uid, t in calls] == expected


def test_history_pacer_needs_a_rate():
    with pytest.raises(ValueError, match="per_second"):
        HistoryPacer(0)


def configuration(**fields: Any) -> k8s.Configuration:
    conf = k8s.Configuration()
    conf.host = "https://127.0.0.1:6443"
    conf.api_key = {"BearerToken": "t0"}
    conf.api_key_prefix = {"BearerToken": "Bearer"}
    for k, v in fields.items():
        setattr(conf, k, v)
    return conf


def test_the_token_is_asked_for_at_every_request_so_a_rotated_one_is_sent():
    conf = configuration()
    tokens = iter(["t1", "t2"])

    def refresh(c: k8s.Configuration) -> None:  # what the in-cluster loader and a tokenFile install
        c.api_key["BearerToken"] = next(tokens)

    assert auth_headers(conf) == {"authorization": "Bearer t0"}
    conf.refresh_api_key_hook = refresh
    assert auth_headers(conf) == {"authorization": "Bearer t1"}
    assert auth_headers(conf) == {"authorization": "Bearer t2"}
    assert auth_headers(configuration(api_key={})) == {}  # a client certificate alone


@pytest.mark.parametrize(
    ("fields", "verify", "check_hostname"),
    [
        ({}, ssl.CERT_REQUIRED, True),
        ({"assert_hostname": False}, ssl.CERT_REQUIRED, False),
        ({"verify_ssl": False}, ssl.CERT_NONE, False),
    ],
)
def test_tls_as_the_kubernetes_client_sets_it_up(fields, verify, check_hostname):
    ctx = ssl_context(configuration(**fields))
    assert (ctx.verify_mode, ctx.check_hostname) == (verify, check_hostname)


@pytest.mark.parametrize(
    ("proxy", "no_proxy", "expected"),
    [
        (None, None, None),
        ("http://proxy:3128", None, "http://proxy:3128"),
        ("http://proxy:3128", "127.0.0.1", None),
    ],
)
def test_proxy(proxy, no_proxy, expected):
    assert proxy_of(configuration(proxy=proxy, no_proxy=no_proxy)) == expected


def test_a_socks_proxy_is_refused_naming_it():
    with pytest.raises(ValueError, match="socks5://proxy:1080"):
        proxy_of(configuration(proxy="socks5://proxy:1080"))


def test_the_dispatcher_uses_the_callers_host_and_bounds_requests_in_flight():
    given = k8s.ApiClient(configuration())
    dispatcher = KubernetesDispatcher(given, "m")
    assert dispatcher.api.host == "https://127.0.0.1:6443"
    assert dispatcher.api.conf is given.configuration  # its token refresh hook too
    assert dispatcher.api.in_flight == DEFAULT_IN_FLIGHT
    assert KubernetesDispatcher(given, "m", in_flight=5).api.in_flight == 5
    with pytest.raises(ValueError, match="in_flight"):
        ApiSession(given.configuration, 0)


TERMINATING = {
    "kind": "Status",
    "reason": "Forbidden",
    "code": 403,
    "details": {"causes": [{"reason": "NamespaceTerminating", "field": "metadata.namespace"}]},
}


@pytest.mark.parametrize(
    ("status", "document", "expected"),
    [
        (403, TERMINATING, True),
        (
            403,
            {**TERMINATING, "details": {"causes": [{"reason": "Other"}, {"reason": "NamespaceTerminating"}]}},
            True,
        ),
        (
            403,
            {"kind": "Status", "reason": "Forbidden", "message": "User cannot create events"},
            False,
        ),  # RBAC
        (404, TERMINATING, False),
        (403, {"details": None}, False),
        (403, {"details": {"causes": "NamespaceTerminating"}}, False),
        (403, ["not", "a", "status"], False),
        (403, None, False),
    ],
)
def test_namespace_terminating(status: int, document: Any, expected: bool) -> None:
    assert namespace_terminating(status, document) is expected
