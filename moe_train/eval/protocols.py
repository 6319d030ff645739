"""The evaluation protocols by name (`eval.protocol`)."""

from __future__ import annotations

from moe_train.eval.apollomoe import ApolloMoEProtocol
from moe_train.eval.mcq import MedbabelProtocol, Protocol

PROTOCOLS: dict[str, type[Protocol]] = {"apollomoe": ApolloMoEProtocol, "medbabel": MedbabelProtocol}


def protocol_for(name: str) -> Protocol:
    return PROTOCOLS[name]()
