"""Figures of a campaign report (enos.campaign.figures, enos.campaign.units): values with
units read as numbers, the checks of a ``figures:`` section, the default set by parameter
type, and real PNGs looked at (size, not blank, the colours of every series present)."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from enos.campaign import figures, units
from enos.errors import ConfigError

PARAMS = {"rate": ["10mbit", "50mbit", "100mbit", "1gbit"], "clients": [1, 2, 4], "codec": ["gzip", "zstd", "xz"]}


def _err(path, message):
    return ConfigError(message, file="campaign.yaml", line=7, keypath=".".join(map(str, path)))


@pytest.mark.parametrize("values,numeric,unit,first", [
    (["10mbit", "50mbit", "200mbit"], True, "mbit", 10.0),
    (["500kbit", "1gbit", "200mbit"], True, "mbit", 0.5),        # mixed: the median's unit
    (["25ms", "1s"], True, "ms", 25.0),
    (["4KiB", "1MiB"], True, "KiB", 4.0),
    (["10M", "20M"], True, "M", 10.0),
    (["0.5%", "2%"], True, "%", 0.5),
    ([1, 2, 4], True, "", 1.0),
    (["gzip", "zstd", "xz"], False, "", 0.0),                   # categorical: file order
    (["10mbit", "fast"], False, "", 0.0),
    (["5m", "10m"], False, "", 0.0),                            # lower-case m: minutes or metres?
    (["10mbit", "25ms"], False, "", 0.0),                       # two families
])
def test_values_with_units_are_numbers(values, numeric, unit, first):
    ax = units.axis(values)
    assert (ax.numeric, ax.unit, ax.values[values[0]]) == (numeric, unit, first)
    if numeric and unit:
        assert ax.label("rate") == f"rate ({unit})"


def test_rates_keep_tc_meaning():
    assert units.parse("1mbps") == (8e6, "rate", "mbps")         # tc: bytes per second
    assert units.parse("1mbit") == (1e6, "rate", "mbit")
    assert units.parse(200) is None and units.parse("abc") is None


@pytest.mark.parametrize("entry,where,message", [
    ({"y": "nope"}, "figures.0.y", "unknown metric 'nope'; metrics: thr, lat"),
    ({"y": "monitor_cpu_percent"}, "figures.0.y", "monitor_* metrics need 'monitor: true'"),
    ({"y": "thr", "x": "size"}, "figures.0.x", "unknown field 'size'; one of: rate, clients, codec, repeat, host, role"),
    ({"y": "thr", "x": "codec", "logx": True}, "figures.0.logx", "a log x axis needs positive numbers; 'codec' takes gzip, zstd, xz"),
    ({"y": "thr", "x": "rate", "logx": True, "kind": "bar"}, "figures.0.logx", "needs kind line or scatter"),
    ({"y": "thr", "x": "rate", "hue": "rate"}, "figures.0", "a field is used twice"),
    ({"y": "thr", "where": {"rate": "3mbit"}}, "figures.0.where.rate", "'3mbit' is not a value of 'rate'"),
    ({"y": "thr", "where": {"zone": "a"}}, "figures.0.where.zone", "unknown field 'zone'"),
])
def test_mistakes_in_figures_are_refused_with_their_key(entry, where, message):
    with pytest.raises(ConfigError) as e:
        figures.check([entry], PARAMS, ["thr", "lat"], False, _err)
    assert e.value.keypath == where and message in str(e.value)


def test_two_figures_into_one_file_are_refused():
    with pytest.raises(ConfigError, match="two figures would be written to thr-vs-rate.png"):
        figures.check([{"y": "thr"}, {"y": "thr", "x": "rate"}], PARAMS, ["thr"], False, _err)


def test_default_figures_follow_the_parameter_types():
    specs = figures.defaults(PARAMS, ["thr"], monitor=True)
    assert [s.file_name for s in specs] == ["thr-vs-rate.png"] + [f"{m}-vs-rate.png" for m in figures.DEFAULT_MONITOR]
    thr = specs[0]
    assert (thr.kind, thr.hue, thr.col, thr.logx) == ("line", "clients", "codec", True)   # 10 → 1000 mbit: log
    assert all(s.hue == "role" for s in specs[1:])           # senders never averaged with sinks
    cat = figures.defaults({"codec": ["gzip", "zstd", "xz"], "level": [1, 9]}, ["ratio"], monitor=False)[0]
    assert (cat.x, cat.kind, cat.hue) == ("codec", "bar", "level")


def _rows():
    rnd = random.Random(4)
    out = []
    for r in PARAMS["rate"]:
        for c in PARAMS["clients"]:
            for codec in PARAMS["codec"]:
                for rep in (1, 2, 3):
                    for host, role, k in (("client-1", "client", 1.0), ("client-2", "client", 1.2),
                                          ("server-1", "server", 0.0)):
                        base = units.axis(PARAMS["rate"]).values[r] * 0.95
                        out.append(dict(rate=r, clients=c, codec=codec, repeat=rep, host=host, role=role,
                                        metric="thr", value=base * k * rnd.uniform(0.97, 1.03)))
    return out


def _looks_drawn(png: Path, min_colours: int):
    from PIL import Image, ImageStat
    with Image.open(png) as im:
        rgb = im.convert("RGB")
        assert rgb.size[0] >= 500 and rgb.size[1] >= 350, rgb.size
        assert ImageStat.Stat(rgb.convert("L")).var[0] > 100                 # not blank
        small = rgb.resize((rgb.size[0] // 2, rgb.size[1] // 2))
        strong = {c for _, c in small.getcolors(1 << 20) if max(c) - min(c) > 80}   # saturated: series
    assert len(strong) >= min_colours, len(strong)


@pytest.mark.parametrize("entry", [
    {"y": "thr", "x": "rate", "hue": "clients", "logx": True, "name": "line"},
    {"y": "thr", "x": "codec", "hue": "rate", "kind": "bar", "where": {"clients": 1}, "name": "bar"},
    {"y": "thr", "x": "codec", "hue": "host", "kind": "box", "name": "box", "where": {"role": "client"}},
    {"y": "thr", "x": "rate", "kind": "scatter", "col": "codec", "row": "clients", "logy": True, "name": "grid"},
])
def test_chosen_figures_are_drawn(entry, tmp_path):
    spec = figures.check([entry], PARAMS, ["thr"], False, _err)[0]
    png = figures.draw(spec, _rows(), PARAMS, tmp_path / spec.file_name, {"thr": "Mbit/s"})
    assert png == tmp_path / f"{entry['name']}.png"
    _looks_drawn(png, 2)


def test_a_figure_with_no_rows_is_not_drawn(tmp_path):
    spec = figures.FigureSpec(y="thr", x="rate", where={"host": ["nobody"]})
    assert figures.draw(spec, _rows(), PARAMS, tmp_path / "x.png") is None and not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("kind", ["bar", "line", "box"])
def test_per_host_spread_is_shown(kind, tmp_path, monkeypatch):
    """Two senders 20 % apart (the issue's case): with ``spread: hosts`` (the default)
    every host's value of every run is a dot on the figure, so the spread hidden by the
    mean shows; ``spread: none`` draws the means alone. Checked on the axes matplotlib
    saved (their scatter collections), not by pixels."""
    from matplotlib.collections import PathCollection
    from matplotlib.figure import Figure
    saved = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (saved.append(self), real(self, *a, **k))[1])
    rows = [dict(codec=c, rate="10mbit", clients=1, repeat=rep, host=h, role="client", metric="thr", value=v + rep)
            for c in PARAMS["codec"] for rep in (1, 2) for h, v in (("client-1", 80.0), ("client-2", 100.0))]
    dots = {}
    for spread in ("hosts", "none"):
        spec = figures.check([{"y": "thr", "x": "codec", "kind": kind, "spread": spread, "name": spread}],
                             PARAMS, ["thr"], False, _err)[0]
        assert figures.draw(spec, rows, PARAMS, tmp_path / f"{spread}.png") is not None
        ax = saved[-1].axes[0]
        dots[spread] = sorted(float(y) for c in ax.collections if isinstance(c, PathCollection)
                              for _, y in c.get_offsets())
    assert dots["hosts"] == sorted([81.0, 82.0, 101.0, 102.0] * 3), dots      # 3 codecs × 2 runs × 2 hosts
    assert dots["none"] == []
    _looks_drawn(tmp_path / "hosts.png", 1)
