"""Load-testing bench for voucherd: every figure beside a baseline measured in the same run."""
