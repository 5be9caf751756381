"""`picket lab up --api-validation off`: the lab API server stores an object the model
refuses (as a real API server would store what its own schema admits), kubectl reads it
back, and the lab records the mode; strict, the default, refuses the same object."""

from __future__ import annotations

import json

from tests.support.lab_cli import Kubectl, picket
from tests.support.policies import netpol

# The model refuses a CIDR it cannot parse; with validation off nothing parses it.
ODD = netpol(
    "default",
    "odd",
    {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "not-a-cidr"}}]}]},
)


def _up(*args: str) -> Kubectl:
    picket("lab", "down")
    up = picket("lab", "up", "--nodes", "1", "--backend", "none", *args)
    return Kubectl(up.stdout.strip().splitlines()[-1])


def test_validation_off_stores_what_the_model_refuses_and_strict_refuses_it():
    try:
        kubectl = _up("--api-validation", "off")
        assert "API validation off" in picket("lab", "status").stdout
        kubectl("apply", "-f", "-", stdin=json.dumps(ODD))
        got = kubectl.json("get", "networkpolicy", "-n", "default", "odd")
        assert got["spec"]["ingress"] == ODD["spec"]["ingress"]
        # The mode is fixed while the lab is up: its store lives in the server's memory.
        again = picket("lab", "up", "--nodes", "1", "--api-validation", "strict", check=False)
        assert again.returncode != 0 and "validation off" in again.stderr

        kubectl = _up()
        assert "API validation" not in picket("lab", "status").stdout
        refused = kubectl("apply", "-f", "-", stdin=json.dumps(ODD), check=False)
        assert refused.returncode != 0
        assert "must be a valid CIDR value" in refused.stderr
    finally:
        picket("lab", "down")
