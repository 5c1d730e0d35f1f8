"""The column codec: constant and all-null columns, nulls, integers, round trips (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from synthetic.codec import ColumnCodec, TableError


def _cols(n: int = 4000, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    with_nulls = rng.lognormal(size=n)
    with_nulls[rng.random(n) < 0.1] = np.nan
    return {"x": x, "count": rng.poisson(3, n).astype(np.float64),
            "zeros": np.where(rng.random(n) < 0.4, 0.0, rng.exponential(5, n)),
            "const": np.full(n, 7.5), "nullable": with_nulls}


def test_constant_column_reproduced_not_modelled():
    codec = ColumnCodec.fit(_cols())
    assert codec.names.index("const") not in codec.modelled and codec.width == 4
    z = np.random.default_rng(1).standard_normal((5000, codec.width)).astype(np.float32)
    out = codec.from_normal(z, np.random.default_rng(2))
    assert np.all(out[:, codec.names.index("const")] == 7.5)
    assert "<ColumnCodec 5 columns [modelled 4 | constant 1 | nullable 1]>" == repr(codec)


def test_no_nans_where_the_source_had_none():
    codec = ColumnCodec.fit(_cols())
    z = np.random.default_rng(1).standard_normal((20_000, codec.width)).astype(np.float32) * 3
    out = codec.from_normal(z, np.random.default_rng(2))
    for i, name in enumerate(codec.names):
        assert np.isnan(out[:, i]).any() == (name == "nullable"), name
    assert abs(np.isnan(out[:, codec.names.index("nullable")]).mean() - 0.1) < 0.01


def test_all_null_column_refused_by_name():
    cols = _cols()
    cols["empty"] = np.full(4000, np.nan)
    with pytest.raises(TableError, match="^empty: every value is null"):
        ColumnCodec.fit(cols)


def test_other_refusals_name_the_column():
    with pytest.raises(TableError, match="^s: not numeric"):
        ColumnCodec.fit({"x": np.arange(5.0), "s": np.array(list("abcde"))})
    with pytest.raises(TableError, match="^x: holds infinite"):
        ColumnCodec.fit({"x": np.array([1.0, np.inf, 2.0])})
    with pytest.raises(TableError, match="every column is constant"):
        ColumnCodec.fit({"c": np.ones(10)})


def test_round_trip_keeps_marginals_integers_and_point_masses():
    cols = _cols()
    codec = ColumnCodec.fit(cols)
    z = codec.to_normal(cols, np.random.default_rng(0))
    assert np.isnan(z[:, codec.modelled.index(codec.names.index("nullable"))]).sum() == np.isnan(cols["nullable"]).sum()
    ok = ~np.isnan(z).any(axis=1)
    back = codec.from_normal(z[ok], np.random.default_rng(0))
    for name in ("x", "count", "zeros"):
        i = codec.names.index(name)
        src = cols[name][ok]
        np.testing.assert_allclose(np.quantile(back[:, i], [0.1, 0.5, 0.9]), np.quantile(src, [0.1, 0.5, 0.9]),
                                   rtol=0.02, atol=0.02)
    count = back[:, codec.names.index("count")]
    assert np.array_equal(count, np.round(count))
    zeros = back[:, codec.names.index("zeros")]
    assert abs((zeros == 0).mean() - (cols["zeros"] == 0).mean()) < 0.02


def test_persisted_codec_is_the_same():
    codec = ColumnCodec.fit(_cols())
    again = ColumnCodec.load(codec.meta(), codec.arrays())
    z = np.random.default_rng(1).standard_normal((1000, codec.width)).astype(np.float32)
    np.testing.assert_array_equal(codec.from_normal(z, np.random.default_rng(3)),
                                  again.from_normal(z, np.random.default_rng(3)))


def test_derived_columns_computed_before_nulls():
    from synthetic.codec import Derived

    rng = np.random.default_rng(0)
    n = 5000
    count = rng.poisson(1, n).astype(np.float64)
    price = rng.lognormal(3, 0.3, n)
    cols = {"count": count, "price": price.copy(), "total": count * price}
    cols["price"][rng.random(n) < 0.05] = np.nan
    codec = ColumnCodec.fit(cols, derived=(Derived("total", "product", ("count", "price")),))
    assert codec.width == 2 and "derived 1" in repr(codec)
    out = codec.from_normal(np.random.default_rng(1).standard_normal((n, 2)).astype(np.float32),
                            np.random.default_rng(2))
    c, p, t = out[:, 0], out[:, 1], out[:, 2]
    assert not np.isnan(t).any() and np.isnan(p).any()   # the total never goes missing, like the source
    ok = ~np.isnan(p)
    np.testing.assert_array_equal(t[ok], c[ok] * p[ok])
    assert np.all(t[c == 0] == 0)
    with pytest.raises(TableError, match="^nope: named in a derivation"):
        ColumnCodec.fit(cols, derived=(Derived("total", "product", ("count", "nope")),))
    with pytest.raises(TableError, match="^total: unknown derivation"):
        Derived("total", "sum", ("count", "price"))
