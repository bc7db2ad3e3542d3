"""Secondary interfaces from the REAL reference data (enos/g5k/nics.py): the 7 clusters
with a second kavlan-capable interface, primary interfaces that are not eth0, clusters
with none, addresses in a kavlan."""
import sys
from pathlib import Path

import pytest

from enos.g5k import nics

sys.path.insert(0, str(Path(__file__).parent))
from g5kref import need_reference  # noqa: E402


@pytest.fixture(scope="module")
def ref():
    return need_reference()


def test_the_clusters_with_a_second_kavlan_interface(ref):
    found = {}
    for site in ref.site_uids:
        for c in ref.cluster_uids(site):
            devs = nics.common_secondaries(ref.nodes(site, c))
            if devs:
                found[f"{site}/{c}"] = devs
    assert found == {"grenoble/kinovis": ["eth1", "eth2"], "grenoble/sasquatch": ["eth1"],
                     "grenoble/servan": ["eth1", "eth2", "fpga0", "fpga1"], "grenoble/troll": ["eth1"],
                     "nancy/gros": ["eth1"], "rennes/abacus29": ["eth1"], "rennes/parasilo": ["eth1"]}


def test_primary_is_the_mounted_ethernet_one(ref):
    assert nics.primary(ref.nodes("lyon", "hercule")[0]).device == "eth1"
    assert nics.primary(ref.nodes("nancy", "gruss")[0]).device == "eth2"
    g = ref.nodes("nancy", "gros")[0]
    assert nics.primary(g) == nics.Nic("eth0", "eno1", "gros-1.nancy.grid5000.fr", 25000000000)
    assert nics.secondaries(g) == [nics.Nic("eth1", "eno2", "gros-1-eth1.nancy.grid5000.fr", 25000000000)]
    # Omni-Path / InfiniBand interfaces are mountable but never kavlan-capable
    assert nics.secondaries(ref.nodes("nancy", "grvingt")[0]) == []


def test_assign_and_shortage_names_the_cluster(ref):
    gros = ref.nodes("nancy", "gros")
    assert nics.assign("gros", gros, ["exp"]) == {"exp": "eth1"}
    assert nics.assign("kinovis", ref.nodes("grenoble", "kinovis"), ["a", "b"]) == {"a": "eth1", "b": "eth2"}
    with pytest.raises(nics.NicShortage, match=r"cluster gros has 1 secondary .*\(eth1\); 2 secondary network\(s\) asked \(a, b\)"):
        nics.assign("gros", gros, ["a", "b"])
    with pytest.raises(nics.NicShortage, match="cluster paradoxe has 0 .*none"):
        nics.assign("paradoxe", ref.nodes("rennes", "paradoxe"), ["a"])
    with pytest.raises(nics.NicShortage, match="cluster roazhon5 has 0"):     # no kavlan NIC at all
        nics.assign("roazhon5", ref.nodes("rennes", "roazhon5"), ["a"])


def test_addresses_in_a_kavlan(ref):
    g1 = ref.nodes("nancy", "gros")[0]
    assert nics.interface(g1, "eth1").network_address == "gros-1-eth1.nancy.grid5000.fr"
    assert nics.kavlan_ip(g1, "eth1", "4") == "10.16.1.1" and nics.kavlan_ip(g1, "eth0", "4") == "10.16.0.1"
    assert nics.kavlan_ip(g1, "eth1", "99") is None
