"""Python serving peers (Seldon MLServer, KServe's model server) serving the demo model, for
`python -m bench.harness --peers` (`make bench PEERS=1`): see `bench/peers/launch.py`."""
