"""JET node side: RF12 radio nodes behind a JeeLink (RF12demo) as JET node circuits.

- :class:`Hub`: the hub driver daemon (``jet hub``), an async context manager;
- :class:`NodeSim`: a pty that speaks RF12demo with simulated nodes (``jet node-sim``);
- :func:`simulate` / :func:`simulated_hub`: both together, in-process (``jet run --simulate``);
- :mod:`.tags`, :mod:`.payload`, :mod:`.rf12demo`, :mod:`.uid`: the packet format,
  the serial line protocol and the node_uid mapping (docs/nodes.md).
"""

from jet_rf12.dongle import DongleSpec, parse_port
from jet_rf12.hub import Hub
from jet_rf12.runner import simulate, simulated_hub
from jet_rf12.sim import NodeSim, SentCommand
from jet_rf12.sim_nodes import BoilerNode, DeclaredNode, SimNode, default_nodes, nodes_for_circuits
from jet_rf12.tags import TagError, decode_tag, encode_tag
from jet_rf12.uid import UidMap, default_uid

__all__ = [
    "BoilerNode",
    "DeclaredNode",
    "DongleSpec",
    "Hub",
    "NodeSim",
    "SentCommand",
    "SimNode",
    "TagError",
    "UidMap",
    "decode_tag",
    "default_nodes",
    "default_uid",
    "encode_tag",
    "nodes_for_circuits",
    "parse_port",
    "simulate",
    "simulated_hub",
]
