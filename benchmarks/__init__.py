"""The benchmarks: thin drivers run from the repository root as `python -m benchmarks.<name>`
(benchmarks/README.md lists them), writing into `benchmarks/results/`. What they share is imported,
not copied: the scores in `rotinv_tf.evaluation` and `pose_metrics`, the start of a driver in
`driver`, resumable units in `units`, result files in `report_files`."""
