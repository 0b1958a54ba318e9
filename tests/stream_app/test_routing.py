"""stream_app.routing: when an event on the wrong partition may be applied where it landed."""
from stream_app.routing import OffPartition


def test_only_partitions_owned_here():
    r = OffPartition()
    r.assigned({0: 0, 2: 0})
    assert r.may_apply_here("u", 0) and r.may_apply_here("u", 2)
    assert not r.may_apply_here("u", 1)


def test_backlog_at_assignment_is_read_first():
    r = OffPartition()
    r.assigned({0: 10})
    for offset in (0, 5, 8):
        r.read(0, offset)
        assert not r.may_apply_here("u", 0)
    r.read(1, 50)  # another partition's progress says nothing about this one
    assert not r.may_apply_here("u", 0)
    r.read(0, 12)  # past the end at assignment (its last record was read in an earlier run)
    assert r.may_apply_here("u", 0)


def test_a_user_waits_for_its_own_rerouted_events():
    r = OffPartition()
    r.assigned({0: 0})
    r.rerouted("u", "e1", 0)
    r.rerouted("u", "e2", 0)
    r.read_back("u", "e1")
    assert not r.may_apply_here("u", 0) and r.may_apply_here("v", 0)
    r.read_back("u", "e2")
    assert r.may_apply_here("u", 0) and r.pending == {}
    r.read_back("nobody", "x")  # not re-routed by this worker: nothing to do


def test_revocation_forgets_everything_about_those_partitions():
    r = OffPartition()
    r.assigned({0: 3, 1: 0})
    r.rerouted("u", "e1", 1)
    r.revoked([0, 1])
    assert r.owned == set() and r.backlog == {} and r.pending == {}
    assert not r.may_apply_here("u", 1)
    r.assigned({1: 7})  # back again: what was re-routed before is now backlog
    assert not r.may_apply_here("u", 1)
