"""REDIS_URL names the topology; a malformed one stops every command with what to fix (exit 2)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from jobtrail.config import Settings
from jobtrail.topology import Topology, TopologyError, mask_password, parse_topology
from tests.support.env import ROOT


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", Topology(kind="single", tls=False, url="redis://127.0.0.1:6379/0",
                                              hosts=(("127.0.0.1", 6379),), db=0)),
        ("rediss://u:p%40ss@cache.example:6380/3", Topology(
            kind="single", tls=True, url="rediss://u:p%40ss@cache.example:6380/3", hosts=(("cache.example", 6380),),
            db=3, username="u", password="p@ss")),
        ("redis+sentinel://s1:26379,s2,[::1]:26380/mymaster/2", Topology(
            kind="sentinel", tls=False, url="redis+sentinel://s1:26379,s2,[::1]:26380/mymaster/2",
            hosts=(("s1", 26379), ("s2", 26379), ("::1", 26380)), service="mymaster", db=2)),
        ("rediss+sentinel://:secret@s1/mymaster", Topology(
            kind="sentinel", tls=True, url="rediss+sentinel://:secret@s1/mymaster", hosts=(("s1", 26379),),
            service="mymaster", password="secret")),
        ("redis+cluster://n1:7000,n2:7001", Topology(
            kind="cluster", tls=False, url="redis+cluster://n1:7000,n2:7001", hosts=(("n1", 7000), ("n2", 7001)))),
        ("rediss+cluster://default:pw@n1", Topology(
            kind="cluster", tls=True, url="rediss+cluster://default:pw@n1", hosts=(("n1", 6379),),
            username="default", password="pw")),
    ],
)
def test_each_url_form_names_its_topology(url, expected):
    assert parse_topology(url) == expected


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("127.0.0.1:6379", "has no scheme"),
        ("http://127.0.0.1:6379", "unknown scheme 'http'"),
        ("redis://a:1,b:2/0", "names 2 hosts"),
        ("redis://127.0.0.1:port/0", "port 'port' of '127.0.0.1' is not a number"),
        ("redis://127.0.0.1:70000/0", "port '70000'"),
        ("redis://127.0.0.1:6379/zero", "database 'zero' is not a number"),
        ("redis+sentinel://s1:26379", "names no service"),
        ("redis+sentinel://s1:26379/mymaster/0/extra", "the path is /SERVICE[/db]"),
        ("redis+sentinel://s1,,s2/mymaster", "a host is missing"),
        ("redis+cluster://n1:7000/0", "a cluster has only database 0"),
        ("redis+cluster://n1:7000?ssl_cert_reqs=none", "options after `?`"),
        ("redis+cluster://[::1/", "is not [IPv6]:port"),
    ],
)
def test_a_malformed_url_is_refused_saying_what_is_wrong(url, says):
    with pytest.raises(TopologyError, match=re.escape(says)):
        parse_topology(url)


def test_a_password_never_shows_in_the_message():
    with pytest.raises(TopologyError) as raised:
        parse_topology("redis+sentinel://user:hunter2@s1:26379")
    assert "hunter2" not in str(raised.value) and "user:***@s1" in str(raised.value)
    assert mask_password("redis://:pw@h/0") == "redis://:***@h/0"
    assert mask_password("redis://h/0") == "redis://h/0"


def test_settings_refuse_a_malformed_url_when_read():
    with pytest.raises(ValueError, match="names no service"):
        Settings.from_env({"REDIS_URL": "redis+sentinel://s1"})
    assert Settings.from_env({"JOBTRAIL_SENTINEL_PASSWORD": "x"}).sentinel_password == "x"


@pytest.mark.parametrize("command", [["serve"], ["worker"], ["repair"], ["migrate"]])
def test_every_command_stops_with_exit_2_on_a_malformed_url(command):
    done = subprocess.run(
        [sys.executable, "-m", "jobtrail.cli", *command], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": "redis+cluster://n1:7000/0"},
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "a cluster has only database 0" in done.stderr
