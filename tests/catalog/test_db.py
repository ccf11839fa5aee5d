"""catalog.db.transaction: one transaction around a block, committed or rolled back as a whole."""

from __future__ import annotations

import pytest

from stellardb.catalog import db

from ..helpers import InterruptAfterCommit


def test_transaction_commits_the_block_or_nothing():
    con = db.connect(":memory:")
    try:
        with db.transaction(con, "two settings"):
            con.execute("insert into settings values ('a', 1, 'x')")
            con.execute("insert into settings values ('b', 2, 'y')")
        with pytest.raises(KeyboardInterrupt):
            with db.transaction(con, "a third"):
                con.execute("insert into settings values ('c', 3, 'z')")
                raise KeyboardInterrupt
        names = [r[0] for r in con.execute("select name from settings where name in ('a', 'b', 'c') order by 1").fetchall()]
        assert names == ["a", "b"]
        # the connection is usable again: no transaction was left open
        with db.transaction(con, "a fourth"):
            con.execute("insert into settings values ('d', 4, 'w')")
        assert con.execute("select count(*) from settings where name = 'd'").fetchall() == [(1,)]
    finally:
        con.close()


def test_interrupt_just_after_the_commit_is_reported_as_stored():
    """Ctrl-C arriving as commit returns: the work is there, and the error says so (not "nothing changed")."""
    from stellardb.errors import InterruptedAfterCommit

    con = db.connect(":memory:")
    try:
        with pytest.raises(InterruptedAfterCommit, match="the e setting is stored and complete"):
            with db.transaction(InterruptAfterCommit(con), lambda: "the e setting"):
                con.execute("insert into settings values ('e', 5, 'v')")
        assert con.execute("select value from settings where name = 'e'").fetchall() == [(5.0,)]
    finally:
        con.close()
