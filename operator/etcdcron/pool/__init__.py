"""The pool member, split by concern; ``Member`` (member.py) wires the parts under one supervisor."""

from etcdcron.pool.member import Member, MemberFailure

__all__ = ["Member", "MemberFailure"]
