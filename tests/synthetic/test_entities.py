"""``python -m synthetic entities``: synthetic users in a Feast project of their own (own Redis)."""

from __future__ import annotations

import numpy as np
from _synthetic_fixture import DEMO
from redis_proc import RedisProcess

from features.repo.datagen import FEATURE_NAMES
from synthetic.cli import main
from synthetic.entities import entity_frame
from synthetic.sampler import Sampler


def test_entities_land_in_their_own_feast_project(tmp_path, capsys):
    redis = RedisProcess().start()
    try:
        workdir = tmp_path / "repo"
        assert main(["entities", "--workdir", str(workdir), "--rows", "300", "--seed", "4",
                     "--project", "synthetic_test", "--redis-url", redis.url]) == 0
        assert "300 synthetic users in Feast project 'synthetic_test'" in capsys.readouterr().out
        from features.repo.workspace import Workspace

        store = Workspace(workdir, project="synthetic_test").store()
        assert store.project == "synthetic_test"
        got = store.get_online_features(features=[f"user_features:{n}" for n in FEATURE_NAMES],
                                        entity_rows=[{"user_id": 1}, {"user_id": 300}]).to_dict()
        expected = entity_frame(Sampler.load(DEMO), 300, 4)
        for name in FEATURE_NAMES:
            want = expected[name].to_numpy()[[0, 299]]
            have = np.array([np.nan if v is None else v for v in got[name]], np.float32)
            np.testing.assert_array_equal(have, want, err_msg=name)
    finally:
        redis.stop()
