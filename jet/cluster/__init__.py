"""Pack groups (docs/groups.md): several packs sharing a group's circuits, each message
handled by one copy, a gone member's circuits placed on the others with no command.

- :class:`GroupView`: the group as its retained messages show it (members, copies),
  and the one placement rule (:meth:`GroupView.choose`) and leader rule
  (:meth:`GroupView.leader`) every reader computes alike;
- :class:`GroupMember`: a pack's part in its group (``jet pack --group G``): the
  leader adopts a gone member's copies, holds its session, trims extra copies.

The copies themselves are ordinary circuits of the shared container
(:class:`jet.containers.boundary.Replica`), loaded by the shared loader.
"""

from jet.cluster.member import GroupMember
from jet.cluster.view import Copy, GroupView, Member

__all__ = ["Copy", "GroupMember", "GroupView", "Member"]
